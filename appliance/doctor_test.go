package appliance

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/doctor"
)

// writeCert writes a self-signed certificate that expires at notAfter,
// as k3s writes its own.
func writeCert(t *testing.T, path string, notAfter time.Time) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: notAfter.Add(-365 * 24 * time.Hour), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Doctor on a node whose path carries 1320-byte tunnel packets of 1420
// and whose API server certificate expires in 40 days: both found, with
// the mtu to set and the date; status carries the same findings.
func TestDoctorFindsThePathMTUAndACertificate(t *testing.T) {
	dataDir := t.TempDir()
	expires := time.Now().Add(40 * 24 * time.Hour)
	writeCert(t, filepath.Join(dataDir, "server/tls/serving-kube-apiserver.crt"), expires)
	writeCert(t, filepath.Join(dataDir, "server/tls/server-ca.crt"), time.Now().Add(3650*24*time.Hour))
	f := newFakes()
	f.pathMTU = 1320
	a := newApp(t, f)
	c := newCluster(t, 2)
	c.extra = "  server_args: [\"--data-dir=" + dataDir + "\"]\n"
	if err := a.Start(context.Background(), c.plan(t, 2, 0, nil)); err != nil {
		t.Fatal(err)
	}
	r := a.Doctor(context.Background())
	var mtu, cert *doctor.Finding
	for i, fd := range r.Findings {
		switch fd.Check {
		case "mtu":
			mtu = &r.Findings[i]
		case "cert":
			if cert != nil {
				t.Errorf("only the certificate within 120 days is a finding: %+v", fd)
			}
			cert = &r.Findings[i]
		}
	}
	if mtu == nil || mtu.Node != "node-1" || !strings.Contains(mtu.Fix, "interface.mtu: 1320") {
		t.Errorf("want node-1's path MTU with mtu 1320 to set, got %+v", r.Findings)
	}
	if cert == nil || !strings.Contains(cert.Problem, expires.UTC().Format("2006-01-02")) || !strings.Contains(cert.Fix, "systemctl restart wgk3s") {
		t.Errorf("want the certificate's date and the restart that renews it, got %+v", r.Findings)
	}
	if h := a.Report().Health; h == nil || h.Problems() != r.Problems() {
		t.Errorf("status's health is not doctor's report: %+v", h)
	}

	f.pathMTU = 1500
	if r := a.Doctor(context.Background()); strings.Contains(checksOf(r), "mtu") {
		t.Errorf("a path that carries the full size is no finding: %+v", r.Findings)
	}
}

func checksOf(r doctor.Report) string {
	var s []string
	for _, f := range r.Findings {
		s = append(s, f.Check)
	}
	return strings.Join(s, ",")
}
