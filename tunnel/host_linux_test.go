package tunnel

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestNoEndpointIsLoggedOncePerPeer(t *testing.T) {
	var buf bytes.Buffer
	l := wgLogger(slog.New(slog.NewTextHandler(&buf, nil)), "wg0")
	for range 5 {
		l.Errorf("%v - Failed to send handshake initiation: %v", "peer(AbCd…WxYz)", "no known endpoint for peer")
		l.Errorf("%v - Failed to send handshake initiation: %v", "peer(EfGh…StUv)", "no known endpoint for peer")
	}
	l.Errorf("Failed to read packet from TUN device: %v", "boom")
	out := buf.String()
	if got := strings.Count(out, "no known endpoint"); got != 2 {
		t.Errorf("logged %d times, want once per peer:\n%s", got, out)
	}
	if strings.Count(out, "level=ERROR") != 1 || !strings.Contains(out, "level=ERROR msg=\"(wg0) Failed to read packet") {
		t.Errorf("other errors must stay errors, the no-endpoint state is not one:\n%s", out)
	}
}
