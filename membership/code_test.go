package membership

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

var cluster = []byte("network: 192.168.2.0/24\nnodes:\n  - name: k3s-master\n    role: master\n    address: 192.168.2.1\n    endpoint: 203.0.113.10:5418\n    public_key: \"l60hi1DvIDkuWlBhkI8m0i+EzOEf0NR2f1NgEg26Byk=\"\n  - name: home-1\n    role: agent\n    address: 192.168.2.3\n    public_key: \"5nXqWCBwDUPWhCQzvvnr9exmsCWNpSdRu5KBBa00M0Y=\"\n")

func TestCodeRoundTrip(t *testing.T) {
	k, _ := wgtypes.GeneratePrivateKey()
	exp := time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC)
	for _, key := range []*wgtypes.Key{&k, nil} {
		s, err := Code{Cluster: cluster, Node: "home-1", Key: key, Expires: exp}.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(s, Prefix) || strings.ContainsAny(s, " \n+/=") {
			t.Errorf("code %q is not one shell-safe word", s)
		}
		// A terminal may wrap it; the blanks are ignored.
		c, err := Parse(s[:40] + "\n  " + s[40:])
		if err != nil {
			t.Fatal(err)
		}
		if string(c.Cluster) != string(cluster) || c.Node != "home-1" || !c.Expires.Equal(exp) || (c.Key == nil) != (key == nil) || key != nil && *c.Key != *key {
			t.Errorf("round trip: %v", c)
		}
		t.Logf("code length with key %v: %d characters", key != nil, len(s))
	}
}

func TestCodeNeverPrintsTheKey(t *testing.T) {
	k, _ := wgtypes.GeneratePrivateKey()
	c := Code{Cluster: cluster, Node: "home-1", Key: &k, Expires: time.Now()}
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%v %+v %#v %s", c, c, c, c)} {
		if strings.Contains(s, k.String()) {
			t.Fatalf("the key shows in %q", s)
		}
	}
}

func TestCodeMistypedOrCut(t *testing.T) {
	k, _ := wgtypes.GeneratePrivateKey()
	s, _ := Code{Cluster: cluster, Node: "home-1", Key: &k, Expires: time.Now().Add(time.Hour)}.Encode()
	flip := func(i int) string {
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	for name, bad := range map[string]string{
		"a character changed at the start":  flip(len(Prefix) + 3),
		"a character changed in the middle": flip(len(s) / 2),
		"a character changed at the end":    flip(len(s) - 1),
		"cut short":                         s[:len(s)-5],
		"a character dropped":               s[:50] + s[51:],
		"not base64":                        s[:30] + "*" + s[31:],
	} {
		if _, err := Parse(bad); !errors.Is(err, ErrMistyped) {
			t.Errorf("%s: err = %v, want ErrMistyped", name, err)
		}
	}
	for name, c := range map[string]struct{ in, want string }{
		"not a code":      {"hello", "not a join code"},
		"another version": {"wgk3s9-abc", "another version"},
		"too long":        {Prefix + strings.Repeat("A", 70000), "far longer"},
	} {
		if _, err := Parse(c.in); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", name, err, c.want)
		}
	}
}

// TestEveryTypoIsRefused changes each character of codes of every length
// modulo 3 (the last character of unpadded base64 then carries 4, 2 or no
// unused bits) to every other base64url character: each changed code must
// be refused, never accepted as the same code. A lenient decoder ignored
// the unused bits, so some changes of the last character passed.
func TestEveryTypoIsRefused(t *testing.T) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	k, _ := wgtypes.GeneratePrivateKey()
	lengths := map[int]bool{}
	for i := 0; len(lengths) < 3 && i < 64; i++ {
		s, err := Code{Cluster: append(cluster, strings.Repeat("#", i)...), Node: "home-1", Key: &k, Expires: time.Now().Add(time.Hour)}.Encode()
		if err != nil {
			t.Fatal(err)
		}
		body := len(s) - len(Prefix)
		if lengths[body%4] {
			continue
		}
		lengths[body%4] = true
		for _, pos := range []int{len(Prefix), len(Prefix) + body/2, len(s) - 2, len(s) - 1} {
			for _, c := range alphabet {
				if byte(c) == s[pos] {
					continue
				}
				typo := s[:pos] + string(c) + s[pos+1:]
				if _, err := Parse(typo); !errors.Is(err, ErrMistyped) {
					t.Fatalf("code of %d characters, position %d changed to %q: err = %v, want ErrMistyped", len(s), pos, c, err)
				}
			}
		}
	}
	if len(lengths) != 3 {
		t.Fatalf("codes of only %d of the 3 lengths modulo 4 were made", len(lengths))
	}
}

func TestCodeExpiry(t *testing.T) {
	exp := time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC)
	c := Code{Cluster: cluster, Node: "home-1", Expires: exp}
	if err := c.Check(exp.Add(-time.Second)); err != nil {
		t.Errorf("a second before: %v", err)
	}
	err := c.Check(exp)
	if err == nil || !strings.Contains(err.Error(), "expired at 2026-12-01T18:00:00Z") || !strings.Contains(err.Error(), "appliance invite home-1") {
		t.Errorf("at the expiry: %v", err)
	}
}

// FuzzParse: no input makes Parse panic, and what it accepts encodes back
// to a code that parses to the same thing.
func FuzzParse(f *testing.F) {
	k, _ := wgtypes.GeneratePrivateKey()
	s, _ := Code{Cluster: cluster, Node: "home-1", Key: &k, Expires: time.Unix(1800000000, 0)}.Encode()
	f.Add(s)
	f.Add(Prefix)
	f.Add(Prefix + "AAAA")
	f.Fuzz(func(t *testing.T, in string) {
		c, err := Parse(in)
		if err != nil {
			return
		}
		again, err := c.Encode()
		if err != nil {
			t.Fatal(err)
		}
		d, err := Parse(again)
		if err != nil || string(d.Cluster) != string(c.Cluster) || d.Node != c.Node || !d.Expires.Equal(c.Expires) || (d.Key == nil) != (c.Key == nil) {
			t.Fatalf("re-encoded code differs: %v, %v", d, err)
		}
	})
}

var discard = slog.New(slog.DiscardHandler)
