// Package etcdstore is the registry store for several `ca serve` replicas:
// entries live in etcd under a prefix (go.etcd.io/etcd/client/v3), each
// entry and its route claims share one etcd lease, the watch is etcd's
// watch and the revision is etcd's revision. A route claim is checked and
// written in one Txn that compares the claim keys' revisions, so two
// replicas cannot hand one prefix to two identities.
//
//	eps, err := etcdstore.ParseURL("etcd://h1:2379,h2:2379")
//	st, err := etcdstore.Open(ctx, eps, etcdstore.Options{})
//	defer st.Close()
//
// The store never compacts etcd (the cluster may be shared): run etcd with
// --auto-compaction-retention. A watcher resuming from a compacted revision
// gets a fresh snapshot.
//
// Tests run against a real etcd started in process (registry/internal/etcdtest).
// It imports only the registry package and the etcd client.
package etcdstore
