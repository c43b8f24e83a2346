package snapshot

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/internal/poll"
)

var token = []byte("K10aaaa::server:0123456789abcdef")

func TestSealAndOpen(t *testing.T) {
	taken := time.Date(2026, 12, 7, 1, 2, 3, 4, time.UTC)
	bundle := []byte("the datastore")
	sealed, err := Seal(token, bundle, taken)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, bundle) {
		t.Error("the sealed snapshot holds its data in clear")
	}
	got, info, err := Open(token, sealed)
	if err != nil || !bytes.Equal(got, bundle) || !info.Taken.Equal(taken) {
		t.Fatalf("Open = %q, %v, %v; want %q taken %v", got, info.Taken, err, bundle, taken)
	}
	if _, _, err := Open([]byte("K10aaaa::server:another"), sealed); !errors.Is(err, ErrCannotOpen) {
		t.Errorf("another token: err = %v, want ErrCannotOpen", err)
	}
	if _, _, err := Open(token, []byte("plain text, not sealed at all")); !errors.Is(err, ErrNotASnapshot) {
		t.Errorf("not a snapshot: err = %v, want ErrNotASnapshot", err)
	}
	if _, err := Seal(nil, bundle, taken); err == nil {
		t.Error("sealed without a token")
	}
}

// TestEveryChangedByteIsRefused: a changed time (a copy made to look
// newer), nonce or data, or a cut copy, does not open.
func TestEveryChangedByteIsRefused(t *testing.T) {
	sealed, err := Seal(token, bytes.Repeat([]byte("x"), 100), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for i := range sealed {
		changed := bytes.Clone(sealed)
		changed[i] ^= 0x01
		if _, _, err := Open(token, changed); err == nil {
			t.Fatalf("byte %d changed: opened", i)
		}
	}
	for _, n := range []int{0, headerLen, len(sealed) - 1} {
		if _, _, err := Open(token, sealed[:n]); err == nil {
			t.Errorf("cut to %d bytes: opened", n)
		}
	}
}

func sealedAt(t *testing.T, at time.Time) []byte {
	t.Helper()
	s, err := Seal(token, []byte(at.String()), at)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestTheStoreKeepsTheNewest(t *testing.T) {
	s := Store{Dir: filepath.Join(t.TempDir(), "snapshots"), Keep: 3}
	base := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	for i := range 5 {
		if kept, err := s.Put(sealedAt(t, base.Add(time.Duration(i)*time.Minute))); !kept || err != nil {
			t.Fatalf("put %d: kept %v, %v", i, kept, err)
		}
	}
	list, err := s.List()
	if err != nil || len(list) != 3 {
		t.Fatalf("List = %v, %v; want 3 copies", list, err)
	}
	for i, want := range []int{4, 3, 2} {
		if !list[i].Taken.Equal(base.Add(time.Duration(want) * time.Minute)) {
			t.Errorf("copy %d taken %v, want minute %d", i, list[i].Taken, want)
		}
	}
	// A node that was down comes back holding an old copy, and is handed
	// one older than every copy kept: it is not kept.
	if kept, err := s.Put(sealedAt(t, base)); kept || err != nil {
		t.Errorf("an older copy: kept %v, %v", kept, err)
	}
	if kept, _ := s.Put(sealedAt(t, base.Add(4*time.Minute))); kept {
		t.Error("the same copy kept twice")
	}
	sealed, info, ok, err := s.Newest()
	if !ok || err != nil || !info.Taken.Equal(base.Add(4*time.Minute)) {
		t.Fatalf("Newest = %v %v %v", info.Taken, ok, err)
	}
	if got, _, err := Open(token, sealed); err != nil || string(got) != base.Add(4*time.Minute).String() {
		t.Errorf("the newest copy opens to %q, %v", got, err)
	}
	entries, _ := os.ReadDir(s.Dir)
	for _, e := range entries {
		fi, _ := e.Info()
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s is %v, want 0600", e.Name(), fi.Mode().Perm())
		}
	}
	if len(entries) != 3 {
		t.Errorf("%d files in the store, want 3 (no temporary file left)", len(entries))
	}
	if _, err := s.Put([]byte("garbage")); !errors.Is(err, ErrNotASnapshot) {
		t.Errorf("garbage: err = %v", err)
	}
	empty := Store{Dir: filepath.Join(t.TempDir(), "none")}
	if _, _, ok, err := empty.Newest(); ok || err != nil {
		t.Errorf("an empty store: ok %v, %v", ok, err)
	}
}

// newDatastore makes a WAL database like kine's, with two tables written
// together in every transaction.
func newDatastore(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	for _, q := range []string{"CREATE TABLE a (v TEXT)", "CREATE TABLE b (v TEXT)", "INSERT INTO a VALUES ('first')", "INSERT INTO b VALUES ('first')"} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	return db
}

func count(t *testing.T, db *sql.DB, table string) int {
	t.Helper()
	var n int
	if err := db.QueryRow("SELECT count(*) FROM " + table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestTakeIsConsistentWhileK3sWrites: the copy is taken while another
// connection commits transactions that each add a row to both tables; the
// copy passes SQLite's integrity check and both tables agree, so it is a
// transaction's state, never half of one.
func TestTakeIsConsistentWhileK3sWrites(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	db := newDatastore(t, path)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var commits atomic.Int64
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			tx, err := db.Begin()
			if err != nil {
				t.Error(err)
				return
			}
			tx.Exec("INSERT INTO a VALUES (?)", i)
			tx.Exec("INSERT INTO b VALUES (?)", i)
			if err := tx.Commit(); err != nil {
				t.Error(err)
				return
			}
			commits.Add(1)
		}
	})
	var rows []int
	for range 5 {
		n := commits.Load() // let the writer commit between copies
		if !poll.Until(10*time.Second, func() bool { return commits.Load() >= n+20 }) {
			break
		}
		bundle, err := Take(context.Background(), Source{Datastore: path}, dir)
		if err != nil {
			close(stop)
			wg.Wait()
			t.Fatal(err)
		}
		files, err := Unpack(bundle)
		if err != nil {
			t.Fatal(err)
		}
		cp := filepath.Join(t.TempDir(), "copy.db")
		os.WriteFile(cp, files[FileDatastore], 0o600)
		c, err := sql.Open("sqlite", "file:"+cp)
		if err != nil {
			t.Fatal(err)
		}
		var check string
		c.QueryRow("PRAGMA integrity_check").Scan(&check)
		na, nb := count(t, c, "a"), count(t, c, "b")
		c.Close()
		if check != "ok" || na != nb {
			t.Errorf("the copy: integrity %q, %d rows in a and %d in b (a transaction cut in half)", check, na, nb)
		}
		rows = append(rows, na)
	}
	close(stop)
	wg.Wait()
	if rows[len(rows)-1] <= rows[0] {
		t.Errorf("rows in the copies %v: the writer's commits never reached a copy", rows)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 3 { // state.db, -wal, -shm
		t.Errorf("the work directory holds %d entries after taking, want the datastore's 3", len(entries))
	}
}

// TestNothingChangedGivesTheSameBundle: the master publishes a snapshot
// only when the datastore changed, by comparing bundles.
func TestNothingChangedGivesTheSameBundle(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	db := newDatastore(t, path)
	tokenFile := filepath.Join(dir, "agent-token")
	os.WriteFile(tokenFile, []byte("K10agent\n"), 0o600)
	src := Source{Datastore: path, Files: map[string]string{FileAgentToken: tokenFile, FileNodePassword: filepath.Join(dir, "absent")}}
	one, err := Take(context.Background(), src, dir)
	if err != nil {
		t.Fatal(err)
	}
	two, _ := Take(context.Background(), src, dir)
	if !bytes.Equal(one, two) {
		t.Error("two copies of an unchanged datastore differ")
	}
	db.Exec("INSERT INTO a VALUES ('more')")
	three, _ := Take(context.Background(), src, dir)
	if bytes.Equal(one, three) {
		t.Error("a changed datastore gives the same bundle")
	}
	files, err := Unpack(three)
	if err != nil || string(files[FileAgentToken]) != "K10agent\n" {
		t.Errorf("Unpack = %v files, agent token %q, %v", len(files), files[FileAgentToken], err)
	}
	if _, ok := files[FileNodePassword]; ok {
		t.Error("an absent file was bundled")
	}
	if _, err := Take(context.Background(), Source{Datastore: filepath.Join(dir, "nothing.db")}, dir); err == nil {
		t.Error("took a snapshot of no datastore")
	}
}

func TestRestorePutsTheFilesBackPrivately(t *testing.T) {
	dir := t.TempDir()
	target := Target{
		Datastore:    filepath.Join(dir, "k3s/server/db/state.db"),
		AgentToken:   filepath.Join(dir, "wgk3s/agent-token"),
		NodePassword: filepath.Join(dir, "rancher/node/password"),
	}
	files := map[string][]byte{FileDatastore: []byte("db"), FileAgentToken: []byte("agent"), FileNodePassword: []byte("pw")}
	if err := Restore(files, target); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{target.Datastore: "db", target.AgentToken: "agent", target.NodePassword: "pw"} {
		got, err := os.ReadFile(path)
		fi, _ := os.Stat(path)
		if err != nil || string(got) != want || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %q %v, mode %v", path, got, err, fi.Mode())
		}
	}
	err := Restore(files, target)
	if !errors.Is(err, ErrDatastoreExists) {
		t.Errorf("restoring over a datastore: err = %v, want ErrDatastoreExists", err)
	}
}
