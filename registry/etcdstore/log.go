package etcdstore

import "go.uber.org/zap"

// nopLogger keeps the etcd client's own zap logging out of meshguard's
// JSON logs; errors reach the caller as returned errors.
func nopLogger() *zap.Logger { return zap.NewNop() }
