package main

import (
	"database/sql"
	"fmt"
	"os"
	"path/filepath"

	_ "modernc.org/sqlite" // kine's SQLite, without cgo
)

// With --data-dir, the stand-in server keeps a small SQLite datastore
// where k3s keeps kine's, DATA-DIR/server/db/state.db, in WAL mode as
// kine opens it: a table of keys and values. Tests read and write it with
// `k3s datastore DATA-DIR put KEY VALUE` and `k3s datastore DATA-DIR get
// KEY` (which prints the value, or exits 1).

func openDatastore(dataDir string) (*sql.DB, error) {
	path := filepath.Join(dataDir, "server", "db", "state.db")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)")
	if err != nil {
		return nil, err
	}
	if _, err := db.Exec("CREATE TABLE IF NOT EXISTS kine (name TEXT PRIMARY KEY, value TEXT)"); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// datastoreCommand is `k3s datastore DATA-DIR put KEY VALUE | get KEY`.
func datastoreCommand(args []string) {
	if len(args) < 3 {
		fail("usage: k3s datastore DATA-DIR put KEY VALUE | get KEY")
	}
	if args[1] == "get" { // a read never makes a datastore
		if _, err := os.Stat(filepath.Join(args[0], "server", "db", "state.db")); err != nil {
			fail("datastore: %v", err)
		}
	}
	db, err := openDatastore(args[0])
	if err != nil {
		fail("datastore: %v", err)
	}
	defer db.Close()
	switch {
	case args[1] == "put" && len(args) == 4:
		if _, err := db.Exec("INSERT OR REPLACE INTO kine VALUES (?, ?)", args[2], args[3]); err != nil {
			fail("datastore put: %v", err)
		}
	case args[1] == "get" && len(args) == 3:
		var v string
		if err := db.QueryRow("SELECT value FROM kine WHERE name = ?", args[2]).Scan(&v); err != nil {
			fail("datastore get %s: %v", args[2], err)
		}
		fmt.Println(v)
	default:
		fail("usage: k3s datastore DATA-DIR put KEY VALUE | get KEY")
	}
}
