package membership

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/meshsync"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// memFiles is Files in memory, for the tests that need no disk.
type memFiles struct {
	mu      sync.Mutex
	data    []byte
	invites []Invite
}

func (f *memFiles) Read() ([]byte, []Invite, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.data), slices.Clone(f.invites), nil
}

func (f *memFiles) Edit(change func([]byte, []Invite) ([]byte, []Invite, error)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, i, err := change(slices.Clone(f.data), slices.Clone(f.invites))
	if err != nil {
		return err
	}
	if d != nil {
		f.data = d
	}
	f.invites = i
	return nil
}

// masterDir writes a master's cluster file, its key and tokens into a
// temporary directory and returns the file's path.
func masterDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	mk, _ := wgtypes.GeneratePrivateKey()
	n1, _ := wgtypes.GeneratePrivateKey()
	for name, s := range map[string]string{"private.key": mk.String(), "token": "server-token", "agent-token": "agent-token"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "wgk3s.yaml")
	data := `network: 192.168.2.0/24
interface:
  private_key_file: ` + dir + `/private.key
nodes:
  - name: k3s-master
    role: master
    address: 192.168.2.1
    endpoint: 203.0.113.10:5418
    public_key: "` + mk.PublicKey().String() + `"
  - name: k3s-node-1
    role: agent
    address: 192.168.2.2
    endpoint: 198.51.100.20:5418
    public_key: "` + n1.PublicKey().String() + `"
k3s:
  token_file: ` + dir + `/token
  agent_token_file: ` + dir + `/agent-token
`
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func diskMaster(t *testing.T) (Master, string) {
	t.Helper()
	path := masterDir(t)
	return Master{Files: Disk{Cluster: path, Dir: filepath.Dir(path)}}, path
}

// TestConcurrentInvitesEachGetTheirNode: invites run at once (the CLI on
// the master, several shells) add one node each, at addresses of their
// own, and record every invite: each read-modify-write of the file and
// invites.json holds the edits' lock. Without it one node went missing
// from both files and two nodes got the same address.
func TestConcurrentInvitesEachGetTheirNode(t *testing.T) {
	m, path := diskMaster(t)
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = m.Invite(InviteRequest{Name: fmt.Sprintf("node-%d", i+2)})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("invite %d: %v", i, err)
		}
	}
	data, invites, err := m.Files.Read()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := configs.Parse(data, path)
	if err != nil {
		t.Fatalf("the file after %d concurrent invites: %v", n, err)
	}
	addrs := map[string]string{}
	for i := range n {
		name := fmt.Sprintf("node-%d", i+2)
		nd, ok := cl.NodeByName(name)
		if !ok {
			t.Errorf("%s is missing from the file", name)
			continue
		}
		if other, dup := addrs[nd.Address.String()]; dup {
			t.Errorf("%s and %s have the same address %s", name, other, nd.Address)
		}
		addrs[nd.Address.String()] = name
		if _, ok := find(invites, name); !ok {
			t.Errorf("%s's invite is not recorded", name)
		}
	}
	if len(invites) != n {
		t.Errorf("%d invites recorded, want %d", len(invites), n)
	}
}

// TestAReloadThatRefusesTakesTheNodeOut: the running appliance refuses the
// file with the new node: the node leaves the file and the invites again;
// what another invite added meanwhile stays.
func TestAReloadThatRefusesTakesTheNodeOut(t *testing.T) {
	m, _ := diskMaster(t)
	if _, err := m.Invite(InviteRequest{Name: "kept"}); err != nil {
		t.Fatal(err)
	}
	m.Reload = func() error { return errors.New("reload rejected: k3s.binary is missing") }
	_, err := m.Invite(InviteRequest{Name: "refused"})
	if err == nil || !strings.Contains(err.Error(), "refused is not in the file") {
		t.Fatalf("err = %v", err)
	}
	data, invites, _ := m.Files.Read()
	if strings.Contains(string(data), "name: refused") || !strings.Contains(string(data), "name: kept") {
		t.Errorf("the file after a refused reload:\n%s", data)
	}
	if _, ok := find(invites, "refused"); ok || len(invites) != 1 {
		t.Errorf("invites after a refused reload: %+v", invites)
	}
	m.Reload = func() error { return ErrNoAppliance }
	inv, err := m.Invite(InviteRequest{Name: "waits"})
	if err != nil || inv.Running {
		t.Errorf("no appliance: %+v, %v (the file waits for its start)", inv, err)
	}
}

func TestInviteChecksTheRequest(t *testing.T) {
	m, _ := diskMaster(t)
	for _, c := range []struct {
		r    InviteRequest
		flag string
	}{
		{InviteRequest{Name: "Home_1"}, "NAME"},
		{InviteRequest{Name: "k3s-node-1"}, "NAME"},
		{InviteRequest{Name: "a", Address: "192.168.2.2"}, "--address"},
		{InviteRequest{Name: "a", Address: "10.0.0.1"}, "--address"},
		{InviteRequest{Name: "a", Role: configs.RoleMaster}, "--role"},
		{InviteRequest{Name: "a", Endpoint: "nope"}, "--endpoint"},
		{InviteRequest{Name: "a", TTL: -time.Hour}, "--ttl"},
	} {
		_, err := m.Invite(c.r)
		var br *BadRequest
		if !errors.As(err, &br) || br.Flag != c.flag {
			t.Errorf("%+v: err = %v, want a BadRequest on %s", c.r, err, c.flag)
		}
	}
	if _, invites, _ := m.Files.Read(); len(invites) != 0 {
		t.Errorf("refused invites were recorded: %+v", invites)
	}
}

// keyChangeMaster is a master with two invites: home-1 whose code carried
// its key, office-1 made with --public-key; the clock is fixed.
func keyChangeMaster(t *testing.T) (m Master, home, office wgtypes.Key, now *time.Time) {
	t.Helper()
	path := masterDir(t)
	data, _ := os.ReadFile(path)
	clock := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	m = Master{Files: &memFiles{data: data}, Now: func() time.Time { return clock }}
	if _, err := m.Invite(InviteRequest{Name: "home-1"}); err != nil {
		t.Fatal(err)
	}
	ok, _ := wgtypes.GeneratePrivateKey()
	pub := ok.PublicKey()
	if _, err := m.Invite(InviteRequest{Name: "office-1", PublicKey: &pub}); err != nil {
		t.Fatal(err)
	}
	data, _, _ = m.Files.Read()
	cl, _ := configs.Parse(data, "m")
	h, _ := cl.NodeByName("home-1")
	return m, h.PublicKey, pub, &clock
}

// TestKeyChangeAtTheMaster: only a node whose invite's code carried its
// key changes it, once; the same change asked again (a lost answer) is
// yes again and writes nothing; another key for the same code (a second
// machine with the code) and an expired invite are refused for good.
func TestKeyChangeAtTheMaster(t *testing.T) {
	m, home, office, clock := keyChangeMaster(t)
	next, _ := wgtypes.GeneratePrivateKey()
	refusal := func(err error, want string) {
		t.Helper()
		var r *meshsync.Refusal
		if !errors.As(err, &r) || !strings.Contains(r.Reason, want) {
			t.Errorf("err = %v, want a refusal saying %q", err, want)
		}
	}
	_, err := m.AcceptKey("office-1", office, next.PublicKey())
	refusal(err, "no open invite whose code carried this key")
	changed, err := m.AcceptKey("home-1", home, next.PublicKey())
	if err != nil || !changed {
		t.Fatalf("home-1's key change: %v, %v", changed, err)
	}
	data, invites, _ := m.Files.Read()
	cl, _ := configs.Parse(data, "m")
	if n, _ := cl.NodeByName("home-1"); n.PublicKey != next.PublicKey() {
		t.Errorf("home-1's key in the file: %s", n.PublicKey)
	}
	if r, _ := find(invites, "home-1"); r.NewKey != next.PublicKey().String() {
		t.Errorf("the invite does not record the new key: %+v", r)
	}
	if retiring, _ := m.Retiring(); len(retiring) != 1 || retiring[0].Key != home {
		t.Errorf("Retiring = %+v, want home-1's code key", retiring)
	}
	// Asked again: yes, nothing written.
	if changed, err := m.AcceptKey("home-1", home, next.PublicKey()); err != nil || changed {
		t.Errorf("asked again: %v, %v", changed, err)
	}
	other, _ := wgtypes.GeneratePrivateKey()
	_, err = m.AcceptKey("home-1", home, other.PublicKey())
	refusal(err, "was used already")
	after, _, _ := m.Files.Read()
	if string(after) != string(data) {
		t.Error("a refused change wrote the file")
	}
	// An expired invite whose code was not used yet.
	m2, home2, _, clock2 := keyChangeMaster(t)
	*clock2 = clock2.Add(DefaultTTL)
	_, err = m2.AcceptKey("home-1", home2, next.PublicKey())
	refusal(err, "expired at")
	_ = clock
}

// TestTidy: an invite whose node made its first handshake (with its own
// key, where it changed the code's) is forgotten; one that expired first
// has its node removed from the file; one still open stays.
func TestTidy(t *testing.T) {
	m, home, office, clock := keyChangeMaster(t)
	next, _ := wgtypes.GeneratePrivateKey()
	if _, err := m.AcceptKey("home-1", home, next.PublicKey()); err != nil {
		t.Fatal(err)
	}
	// office-1 handshook; home-1 changed its key but its new key did not
	// handshake yet.
	shook := map[wgtypes.Key]bool{office: true, home: true}
	tidied, err := m.Tidy(func(k wgtypes.Key) bool { return shook[k] })
	if err != nil || len(tidied.Used) != 1 || tidied.Used[0].Node != "office-1" || tidied.Open != 1 {
		t.Fatalf("Tidy = %+v, %v", tidied, err)
	}
	shook[next.PublicKey()] = true
	if tidied, _ := m.Tidy(func(k wgtypes.Key) bool { return shook[k] }); len(tidied.Used) != 1 || tidied.Open != 0 {
		t.Errorf("after home-1's new key handshook: %+v", tidied)
	}
	// An invite that runs out: its node leaves the file.
	if _, err := m.Invite(InviteRequest{Name: "late", TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	*clock = clock.Add(time.Hour)
	tidied, err = m.Tidy(func(wgtypes.Key) bool { return false })
	if err != nil || len(tidied.Expired) != 1 || tidied.Expired[0].Node != "late" {
		t.Fatalf("Tidy after the expiry = %+v, %v", tidied, err)
	}
	data, invites, _ := m.Files.Read()
	if strings.Contains(string(data), "name: late") || len(invites) != 0 {
		t.Errorf("the expired invite's node or record stayed:\n%s\n%+v", data, invites)
	}
}

// fakeSwitchApp answers the key switch's requests from a script.
type fakeSwitchApp struct {
	mu      sync.Mutex
	answers []error // ChangeKey's, in turn; the last repeats
	reach   func(used wgtypes.Key) error
	used    []wgtypes.Key
	asked   int
	onAsk   func()
}

func (f *fakeSwitchApp) ChangeKey(ctx context.Context, next wgtypes.Key) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.answers[min(f.asked, len(f.answers)-1)]
	f.asked++
	if f.onAsk != nil {
		f.onAsk()
	}
	return err
}

func (f *fakeSwitchApp) UseKey(k wgtypes.Key) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.used = append(f.used, k)
	return nil
}

func (f *fakeSwitchApp) ReachMaster(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.reach == nil || len(f.used) == 0 {
		return nil
	}
	return f.reach(f.used[len(f.used)-1])
}

func switchDir(t *testing.T) (keyFile string, code wgtypes.Key) {
	t.Helper()
	keyFile = filepath.Join(t.TempDir(), "private.key")
	code, _ = wgtypes.GeneratePrivateKey()
	os.WriteFile(keyFile, []byte(code.String()+"\n"), 0o600)
	os.WriteFile(keyFile+InvitedSuffix, []byte("home-1 2030-01-01T00:00:00Z\n"), 0o600)
	return keyFile, code
}

// TestTheSwitch: yes → the node uses its own key and the markers go; a
// refusal (409) or "not listed" (the code was used by another machine) →
// ErrCodeRefused, with nothing switched; no answer → asked again, never a
// key switched without a yes, and stopped at the code's expiry.
func TestTheSwitch(t *testing.T) {
	t.Run("yes", func(t *testing.T) {
		keyFile, _ := switchDir(t)
		app := &fakeSwitchApp{answers: []error{meshsync.ErrNoAnswer, nil}}
		s := &Switch{KeyFile: keyFile, App: app, Log: discard, Retry: time.Millisecond}
		if err := s.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		if len(app.used) != 1 || Pending(keyFile) {
			t.Errorf("used %d keys, pending %v", len(app.used), Pending(keyFile))
		}
		if _, err := os.Stat(keyFile + NextSuffix); !os.IsNotExist(err) {
			t.Errorf("the next key's file stayed: %v", err)
		}
	})
	for name, answer := range map[string]error{
		"refused":    &meshsync.RefusedError{Status: http.StatusConflict, Reason: "the join code for home-1 was used already"},
		"not listed": meshsync.ErrNotListed,
	} {
		t.Run(name, func(t *testing.T) {
			keyFile, code := switchDir(t)
			app := &fakeSwitchApp{answers: []error{answer}}
			err := (&Switch{KeyFile: keyFile, App: app, Log: discard}).Run(context.Background())
			if !errors.Is(err, ErrCodeRefused) || len(app.used) != 0 || app.asked != 1 {
				t.Fatalf("err = %v, used %d keys, asked %d times", err, len(app.used), app.asked)
			}
			if k, _ := readKey(keyFile); k != code || !Pending(keyFile) {
				t.Error("a refused switch changed the key or the marker")
			}
		})
	}
	t.Run("never answered: no key swapped, stopped at the code's expiry", func(t *testing.T) {
		keyFile, code := switchDir(t)
		clock := time.Unix(1_800_000_000, 0)
		app := &fakeSwitchApp{answers: []error{meshsync.ErrNoAnswer}, onAsk: func() { clock = clock.Add(time.Minute) }}
		s := &Switch{KeyFile: keyFile, App: app, Log: discard, Retry: time.Millisecond, Expires: clock.Add(10 * time.Minute),
			Now: func() time.Time { return clock }}
		err := s.Run(context.Background())
		if !errors.Is(err, ErrCodeRefused) || !strings.Contains(err.Error(), "expired at") {
			t.Fatalf("err = %v", err)
		}
		if len(app.used) != 0 || app.asked < 10 || app.asked > 12 {
			t.Errorf("used %d keys (want none), asked %d times", len(app.used), app.asked)
		}
		if k, _ := readKey(keyFile); k != code || !Pending(keyFile) {
			t.Error("a switch the master never answered changed the key or the marker")
		}
	})
}

// TestRecover: a node stopped after writing the file that names its own
// key but before the key: the key moves over at the next start.
func TestRecover(t *testing.T) {
	keyFile, _ := switchDir(t)
	next, _ := wgtypes.GeneratePrivateKey()
	os.WriteFile(keyFile+NextSuffix, []byte(next.String()+"\n"), 0o600)
	m, _ := wgtypes.GeneratePrivateKey()
	file := []byte("network: 192.168.2.0/24\nnodes:\n  - name: m\n    role: master\n    address: 192.168.2.1\n    endpoint: 203.0.113.1:5418\n    public_key: \"" + m.PublicKey().String() +
		"\"\n  - name: home-1\n    role: agent\n    address: 192.168.2.3\n    public_key: \"" + next.PublicKey().String() + "\"\n")
	done, err := Recover(keyFile, file)
	if err != nil || !done {
		t.Fatalf("Recover = %v, %v", done, err)
	}
	if k, _ := readKey(keyFile); k != next {
		t.Error("the key did not move over")
	}
	if done, _ := Recover(keyFile, file); done {
		t.Error("Recover twice did it twice")
	}
}
