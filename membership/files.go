package membership

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"syscall"
	"time"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/internal/atomicfile"
)

// Files is the master's cluster file and its open invites. Every change
// of either is a read-modify-write under one lock, whoever makes it: the
// invite and remove commands, and the running master (a node's key change,
// an expired invite). So two invites at once give two nodes with two
// addresses, and no edit undoes another.
type Files interface {
	// Edit runs change on the current file and invites, under the lock,
	// and writes back what it returns (what it returns unchanged is not
	// written). An error from change writes nothing.
	Edit(change func(data []byte, invites []Invite) ([]byte, []Invite, error)) error
	// Read returns the file and invites as they are.
	Read() ([]byte, []Invite, error)
}

// Disk is Files on the master's disk: the cluster file, and invites.json
// and the lock (cluster.lock) in the private key's directory.
type Disk struct {
	Cluster string
	// Dir holds invites.json and cluster.lock (/etc/wgk3s).
	Dir string
	// LockWait bounds the wait for another edit (default 30 s).
	LockWait time.Duration
}

var _ Files = Disk{}

// DiskFor is the Disk of the cluster file at path, the directory taken
// from its interface.private_key_file.
func DiskFor(path string, cl *configs.Cluster) Disk {
	return Disk{Cluster: path, Dir: filepath.Dir(cl.Interface.PrivateKeyFile)}
}

func (d Disk) invitesPath() string { return filepath.Join(d.Dir, InvitesFile) }

// LockFile is where the edits' lock is taken, beside invites.json.
const LockFile = "cluster.lock"

// ErrLocked is another edit holding the lock longer than the wait.
var ErrLocked = errors.New("another edit of the cluster file holds its lock")

// lock takes the edits' lock: an exclusive flock on cluster.lock, which
// the kernel releases when its holder exits, however it exits.
func (d Disk) lock() (unlock func(), err error) {
	path := filepath.Join(d.Dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	wait := d.LockWait
	if wait == 0 {
		wait = 30 * time.Second
	}
	deadline := time.Now().Add(wait)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return nil, fmt.Errorf("%w (%s) for %s; fix: wait for the other invite or remove to finish, and try again", ErrLocked, path, wait)
			}
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		time.Sleep(20 * time.Millisecond) // bounded by deadline
	}
}

// Read implements Files.
func (d Disk) Read() ([]byte, []Invite, error) {
	data, err := configs.ReadFile(d.Cluster)
	if err != nil {
		return nil, nil, err
	}
	invites, err := loadInvites(d.invitesPath())
	return data, invites, err
}

// Edit implements Files.
func (d Disk) Edit(change func([]byte, []Invite) ([]byte, []Invite, error)) error {
	unlock, err := d.lock()
	if err != nil {
		return err
	}
	defer unlock()
	data, invites, err := d.Read()
	if err != nil {
		return err
	}
	nd, ni, err := change(data, invites)
	if err != nil {
		return err
	}
	if nd != nil && !bytes.Equal(nd, data) {
		if err := atomicfile.Replace(d.Cluster, nd); err != nil {
			return fmt.Errorf("writing %s: %w", d.Cluster, err)
		}
	}
	if !reflect.DeepEqual(ni, invites) {
		if err := saveInvites(d.invitesPath(), ni); err != nil {
			return fmt.Errorf("%s is written, but recording the invites in %s failed: %w", d.Cluster, d.invitesPath(), err)
		}
	}
	return nil
}
