// Package deploy validates meshguard's deployment files: the Kubernetes
// manifests are strictly decoded into the official API types, the compose
// file is parsed and cross-checked. It is a module of its own so that the
// meshguard binary never links the Kubernetes API packages.
package deploy
