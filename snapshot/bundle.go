package snapshot

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	_ "modernc.org/sqlite" // SQLite without cgo: VACUUM INTO
)

// Names of the files in a bundle.
const (
	// FileDatastore is k3s's SQLite datastore (server/db/state.db).
	FileDatastore = "state.db"
	// FileAgentToken is the agent token: the datastore keeps its hash, so
	// a master restored with another one would refuse every agent.
	FileAgentToken = "agent-token"
	// FileNodePassword is the master's own node password
	// (/etc/rancher/node/password): the datastore keeps its hash too.
	FileNodePassword = "node-password"
)

// maxBundle bounds what Open's caller unpacks (a datastore of a few
// dozen nodes is a few MiB; k3s's own limit for kine is 2 GiB).
const maxBundle = 1 << 30

// Source is what a snapshot is taken of.
type Source struct {
	// Datastore is the path of k3s's state.db.
	Datastore string
	// Files are the other files to keep, by name in the bundle; a file
	// that does not exist is left out.
	Files map[string]string
}

// Take takes a consistent copy of the datastore (SQLite's VACUUM INTO: one
// read transaction, so k3s writing meanwhile changes nothing of it) and
// returns it with the other files as a gzipped tar. The same data gives
// the same bytes, so a bundle equal to the last one means nothing
// changed. work is a private directory for the copy; it is removed.
func Take(ctx context.Context, src Source, work string) ([]byte, error) {
	if _, err := os.Stat(src.Datastore); err != nil {
		return nil, fmt.Errorf("the datastore: %w", err)
	}
	if err := os.MkdirAll(work, 0o700); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(work, "snapshot-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	copyPath := filepath.Join(tmp, FileDatastore)
	if err := vacuumInto(ctx, src.Datastore, copyPath); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	tw := tar.NewWriter(gz)
	names := []string{FileDatastore}
	paths := map[string]string{FileDatastore: copyPath}
	for _, name := range []string{FileAgentToken, FileNodePassword} {
		if p, ok := src.Files[name]; ok {
			names, paths[name] = append(names, name), p
		}
	}
	for _, name := range names {
		data, err := os.ReadFile(paths[name])
		if errors.Is(err, os.ErrNotExist) && name != FileDatastore {
			continue
		}
		if err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// vacuumInto writes a consistent copy of the database at db to out.
func vacuumInto(ctx context.Context, db, out string) error {
	// busy_timeout: k3s may hold a write lock for a moment; a WAL
	// database lets the copy read beside the writer otherwise.
	conn, err := sql.Open("sqlite", "file:"+db+"?_pragma=busy_timeout(10000)")
	if err != nil {
		return fmt.Errorf("opening the datastore %s: %w", db, err)
	}
	defer conn.Close()
	if strings.ContainsAny(out, "'\x00") {
		return fmt.Errorf("cannot copy the datastore to %q: a quote in the path", out)
	}
	if _, err := conn.ExecContext(ctx, "VACUUM INTO '"+out+"'"); err != nil {
		return fmt.Errorf("copying the datastore %s (VACUUM INTO): %w", db, err)
	}
	return nil
}

// Unpack returns the files of a bundle by name.
func Unpack(bundle []byte) (map[string][]byte, error) {
	gz, err := gzip.NewReader(bytes.NewReader(bundle))
	if err != nil {
		return nil, fmt.Errorf("the snapshot's bundle: %w", err)
	}
	tr := tar.NewReader(gz)
	files := map[string][]byte{}
	var total int64
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("the snapshot's bundle: %w", err)
		}
		switch h.Name {
		case FileDatastore, FileAgentToken, FileNodePassword:
		default:
			return nil, fmt.Errorf("the snapshot's bundle holds an unknown file %q", h.Name)
		}
		if total += h.Size; total > maxBundle {
			return nil, fmt.Errorf("the snapshot's bundle is over %d bytes", maxBundle)
		}
		data, err := io.ReadAll(io.LimitReader(tr, h.Size))
		if err != nil {
			return nil, fmt.Errorf("the snapshot's bundle: %w", err)
		}
		files[h.Name] = data
	}
	if _, ok := files[FileDatastore]; !ok {
		return nil, errors.New("the snapshot's bundle holds no datastore")
	}
	return files, nil
}
