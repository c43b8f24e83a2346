package snapshot

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// kineLike makes a WAL datastore shaped like kine's: rows of a key, a
// revision and a value of a Kubernetes object's size, some of it random
// (uids, timestamps, resource versions) and the rest field names.
func kineLike(b *testing.B, path string, rows int) int64 {
	b.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	db.Exec("CREATE TABLE kine (id INTEGER PRIMARY KEY, name TEXT, created INTEGER, deleted INTEGER, create_revision INTEGER, prev_revision INTEGER, lease INTEGER, value BLOB, old_value BLOB)")
	tx, _ := db.Begin()
	r := rand.New(rand.NewPCG(1, 2))
	for i := range rows {
		value := fmt.Sprintf(`{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"object-%d","namespace":"default","uid":"%016x-%016x","resourceVersion":"%d","creationTimestamp":"2026-12-07T01:%02d:%02dZ","managedFields":[{"manager":"kubectl-client-side-apply","operation":"Update","apiVersion":"v1","time":"2026-12-07T01:00:00Z","fieldsType":"FieldsV1"}]},"data":{"key":"%x"}}`,
			i, r.Uint64(), r.Uint64(), i, i%60, i%60, r.Uint64())
		for len(value) < 1024 {
			value += fmt.Sprintf(`,"pad-%x":"%x"`, r.Uint32(), r.Uint64())
		}
		tx.Exec("INSERT INTO kine (name, created, deleted, create_revision, prev_revision, lease, value, old_value) VALUES (?, 1, 0, ?, ?, 0, ?, ?)",
			fmt.Sprintf("/registry/configmaps/default/object-%d", i), i, i, value, value)
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	db.Exec("PRAGMA wal_checkpoint(TRUNCATE)")
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	return fi.Size()
}

// BenchmarkTakeAndSeal is the master's cost of one snapshot of a datastore
// of about 20 MiB (10000 objects of 1 KiB, each with its previous value,
// as kine keeps them): the consistent copy, the bundle, the seal.
// sealed-B is what goes over the mesh to each node.
func BenchmarkTakeAndSeal(b *testing.B) {
	dir := b.TempDir()
	path := filepath.Join(dir, "state.db")
	size := kineLike(b, path, 10000)
	token := []byte("server-token")
	var sealed []byte
	for b.Loop() {
		bundle, err := Take(context.Background(), Source{Datastore: path}, dir)
		if err != nil {
			b.Fatal(err)
		}
		if sealed, err = Seal(token, bundle, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(size), "datastore-B")
	b.ReportMetric(float64(len(sealed)), "sealed-B")
}

// BenchmarkOpenAndRestore is a new master's side: open the copy, unpack
// it, write the datastore in place.
func BenchmarkOpenAndRestore(b *testing.B) {
	dir := b.TempDir()
	path := filepath.Join(dir, "state.db")
	kineLike(b, path, 10000)
	token := []byte("server-token")
	bundle, err := Take(context.Background(), Source{Datastore: path}, dir)
	if err != nil {
		b.Fatal(err)
	}
	sealed, _ := Seal(token, bundle, time.Now())
	for i := 0; b.Loop(); i++ {
		plain, _, err := Open(token, sealed)
		if err != nil {
			b.Fatal(err)
		}
		files, err := Unpack(plain)
		if err != nil {
			b.Fatal(err)
		}
		if err := Restore(files, Target{Datastore: filepath.Join(dir, fmt.Sprint(i), "state.db")}); err != nil {
			b.Fatal(err)
		}
	}
}
