// etcd built from go.etcd.io/etcd/server/v3 at the release this Kubernetes pins, so the
// storage backend matches what upstream tests the apiserver against.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
