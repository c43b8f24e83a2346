package configs

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/edit")

// golden compares got with testdata/edit/name (written with -update).
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "edit", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./configs -run Edit -update once)", err)
	}
	if d := cmp.Diff(string(want), string(got)); d != "" {
		t.Errorf("%s (-want +got):\n%s", name, d)
	}
}

// onlyInserted checks that next is data with lines inserted and nothing
// else changed.
func onlyInserted(t *testing.T, data, next []byte) {
	t.Helper()
	a, b := strings.SplitAfter(string(data), "\n"), strings.SplitAfter(string(next), "\n")
	i := 0
	for i < len(a) && a[i] == b[i] {
		i++
	}
	n := len(b) - len(a)
	if n <= 0 || strings.Join(a[i:], "") != strings.Join(b[i+n:], "") {
		t.Fatalf("not a pure insertion:\n%s", next)
	}
}

func TestEditAddNodeKeepsTheFile(t *testing.T) {
	for _, c := range []struct{ in, out string }{
		{"../../wgk3s.yaml", "example.add.yaml"},
		{"commented.yaml", "commented.add.yaml"},
	} {
		data, err := os.ReadFile(filepath.Join("testdata", "edit", c.in))
		if err != nil {
			t.Fatal(err)
		}
		next, err := AddNode(data, NewNode{Name: "home-1", Role: "agent", Address: "192.168.2.3", PublicKey: "5nXqWCBwDUPWhCQzvvnr9exmsCWNpSdRu5KBBa00M0Y="})
		if err != nil {
			t.Fatalf("%s: %v", c.in, err)
		}
		onlyInserted(t, data, next)
		golden(t, c.out, next)
		cl, perr := Parse(next, c.out)
		if c.in == "../../wgk3s.yaml" {
			if perr != nil {
				t.Fatalf("the example with home-1 does not parse: %v", perr)
			}
			n, ok := cl.NodeByName("home-1")
			if !ok || n.Address.String() != "192.168.2.3" || n.Endpoint.Host != "" || len(cl.Nodes) != 3 {
				t.Errorf("home-1 parsed as %+v (%d nodes)", n, len(cl.Nodes))
			}
		}
	}
}

func TestEditAddNodeWithEndpoint(t *testing.T) {
	data, _ := os.ReadFile("wgk3s.yaml")
	next, err := AddNode(data, NewNode{Name: "k3s-node-2", Role: "agent", Address: "192.168.2.3", Endpoint: "198.51.100.30:5418", PublicKey: "5nXqWCBwDUPWhCQzvvnr9exmsCWNpSdRu5KBBa00M0Y="})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := Parse(next, "next")
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := cl.NodeByName("k3s-node-2"); n.Endpoint.String() != "198.51.100.30:5418" {
		t.Errorf("endpoint = %v", n.Endpoint)
	}
	// An IPv6 endpoint is a YAML flow sequence unless it is quoted.
	next, err = AddNode(data, NewNode{Name: "k3s-node-6", Role: "agent", Address: "192.168.2.7", Endpoint: "[2001:db8::7]:5418", PublicKey: "5nXqWCBwDUPWhCQzvvnr9exmsCWNpSdRu5KBBa00M0Y="})
	if err != nil {
		t.Fatal(err)
	}
	cl, err = Parse(next, "next")
	if err != nil {
		t.Fatalf("the file with an IPv6 endpoint: %v\n%s", err, next)
	}
	if n, _ := cl.NodeByName("k3s-node-6"); n.Endpoint.String() != "[2001:db8::7]:5418" {
		t.Errorf("IPv6 endpoint = %v", n.Endpoint)
	}
}

func TestEditRemoveNode(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "edit", "commented.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	next, err := RemoveNode(data, "node-1")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "commented.remove.yaml", next)
	// Adding then removing gives the file back, byte for byte.
	added, err := AddNode(data, NewNode{Name: "home-1", Role: "agent", Address: "10.9.0.9", PublicKey: "5nXqWCBwDUPWhCQzvvnr9exmsCWNpSdRu5KBBa00M0Y="})
	if err != nil {
		t.Fatal(err)
	}
	back, err := RemoveNode(added, "home-1")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(string(data), string(back)); d != "" {
		t.Errorf("add then remove changed the file (-want +got):\n%s", d)
	}
	ex, _ := os.ReadFile("wgk3s.yaml")
	next, err = RemoveNode(ex, "k3s-node-1")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "example.remove.yaml", next)
}

func TestEditRefusals(t *testing.T) {
	data, _ := os.ReadFile("wgk3s.yaml")
	for _, c := range []struct {
		name string
		do   func() error
		want string
	}{
		{"a name in use", func() error {
			_, err := AddNode(data, NewNode{Name: "k3s-node-1", Role: "agent", Address: "192.168.2.9", PublicKey: "x"})
			return err
		}, `"k3s-node-1" is already in the file (line 37)`},
		{"no such node", func() error { _, err := RemoveNode(data, "nope"); return err }, `no node named "nope"`},
		{"a flow list", func() error {
			_, err := AddNode([]byte("network: 10.0.0.0/24\nnodes: [{name: a, role: master}]\n"), NewNode{Name: "b"})
			return err
		}, "write it as a block list"},
		{"no list", func() error { _, err := AddNode([]byte("network: 10.0.0.0/24\n"), NewNode{Name: "b"}); return err }, "has no nodes list"},
		{"not YAML", func() error { _, err := AddNode([]byte("nodes: [\n"), NewNode{Name: "b"}); return err }, "does not parse"},
	} {
		err := c.do()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to say %q", c.name, err, c.want)
		}
	}
}

func TestEditExcerpt(t *testing.T) {
	data, _ := os.ReadFile("wgk3s.yaml")
	data, err := AddNode(data, NewNode{Name: "home-1", Role: "agent", Address: "192.168.2.3", PublicKey: "5nXqWCBwDUPWhCQzvvnr9exmsCWNpSdRu5KBBa00M0Y="})
	if err != nil {
		t.Fatal(err)
	}
	ex, err := Excerpt(data, "k3s-master", "home-1")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(ex), "#") {
		t.Errorf("the excerpt keeps comments:\n%s", ex)
	}
	got, err := Parse(ex, "excerpt")
	if err != nil {
		t.Fatalf("the excerpt does not parse: %v\n%s", err, ex)
	}
	full, _ := Parse(data, "full")
	if len(got.Nodes) != 2 || got.Nodes[0].Name != "k3s-master" || got.Nodes[1].Name != "home-1" {
		t.Errorf("excerpt nodes = %+v", got.Nodes)
	}
	// Everything but the nodes list is the master's.
	type settings struct {
		Network   string
		Interface Interface
		Firewall  Firewall
		K3s       K3s
		Metrics   Metrics
		Runtime   Runtime
		Sync      bool
	}
	of := func(c *Cluster) settings {
		c.Runtime.MemoryLimit = 0 // its default grows with the number of nodes
		return settings{c.Network.String(), c.Interface, c.Firewall, c.K3s, c.Metrics, c.Runtime, c.Sync}
	}
	if d := cmp.Diff(of(full), of(got), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); d != "" {
		t.Errorf("the excerpt's settings differ from the file's (-file +excerpt):\n%s", d)
	}
	if _, err := Excerpt(data, "k3s-master", "nope"); err == nil {
		t.Error("an excerpt of a node not in the file succeeded")
	}
}

func TestEditSetNodeKey(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "edit", "commented.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const next = "5nXqWCBwDUPWhCQzvvnr9exmsCWNpSdRu5KBBa00M0Y="
	for _, name := range []string{"master", "node-1"} {
		got, err := SetNodeKey(data, name, next)
		if err != nil {
			t.Fatal(err)
		}
		cl, err := Parse(got, "got")
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := cl.NodeByName(name); n.PublicKey.String() != next {
			t.Errorf("%s's key = %s", name, n.PublicKey)
		}
		// One line changed, and only the key in it: quotes kept.
		a, b := strings.Split(string(data), "\n"), strings.Split(string(got), "\n")
		diff := 0
		for i := range a {
			if a[i] != b[i] {
				diff++
				if !strings.Contains(b[i], next) || len(a[i]) != len(b[i]) {
					t.Errorf("line %d: %q -> %q", i+1, a[i], b[i])
				}
			}
		}
		if diff != 1 || len(a) != len(b) {
			t.Errorf("%s: %d lines changed", name, diff)
		}
	}
	if _, err := SetNodeKey(data, "nope", next); err == nil {
		t.Error("a missing node's key was set")
	}
}
