package tunnel

import (
	"errors"
	"strings"
	"testing"

	"github.com/wgk3s/wgk3s/configs"
)

func TestParseRelease(t *testing.T) {
	tests := []struct {
		in   string
		want KernelVersion
	}{
		{"3.10.0-1160.el7.x86_64", KernelVersion{3, 10, 0}},
		{"5.15.2-1.el7.elrepo.x86_64", KernelVersion{5, 15, 2}},
		{"6.6.2-1.el7.elrepo.x86_64", KernelVersion{6, 6, 2}},
		{"5.4.0-150-generic", KernelVersion{5, 4, 0}},
		{"6.18.44-fc-v595", KernelVersion{6, 18, 44}},
		{"6.1", KernelVersion{6, 1, 0}},
		{"5.15.0+", KernelVersion{5, 15, 0}},
	}
	for _, tt := range tests {
		got, err := ParseRelease(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseRelease(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "linux", "5", "x.y.z", "5.-1"} {
		if _, err := ParseRelease(bad); err == nil {
			t.Errorf("ParseRelease(%q) accepted", bad)
		}
	}
}

func TestKernelVersionLess(t *testing.T) {
	if !(KernelVersion{5, 14, 99}).Less(KernelMinimum) || (KernelVersion{5, 15, 0}).Less(KernelMinimum) || (KernelVersion{6, 0, 0}).Less(KernelMinimum) {
		t.Fatal("ordering around 5.15 is wrong")
	}
}

func TestChoose(t *testing.T) {
	ok := func() error { return nil }
	noModule := func() error { return errors.New("has no WireGuard module") }
	mustNotAsk := func() error { panic("kernel probed for an old kernel or a forced userspace mode") }
	tests := []struct {
		name    string
		want    configs.Mode
		release string
		probe   func() error
		mode    configs.Mode
		reason  string // substring
		wantErr bool
	}{
		{"centos7 stock auto", configs.ModeAuto, "3.10.0-1160.el7.x86_64", mustNotAsk, configs.ModeUserspace, "older than 5.15.0", false},
		{"elrepo 5.15 auto", configs.ModeAuto, "5.15.2-1.el7.elrepo.x86_64", ok, configs.ModeKernel, "has the WireGuard module", false},
		{"elrepo 6.6 auto", configs.ModeAuto, "6.6.2-1.el7.elrepo.x86_64", ok, configs.ModeKernel, "5.15.0 or later", false},
		{"ubuntu 5.4 auto", configs.ModeAuto, "5.4.0-150-generic", mustNotAsk, configs.ModeUserspace, "older than", false},
		{"new kernel without module", configs.ModeAuto, "6.18.44-fc-v595", noModule, configs.ModeUserspace, "has no WireGuard module", false},
		{"unparsable release", configs.ModeAuto, "weird", mustNotAsk, configs.ModeUserspace, "weird", false},
		{"forced userspace", configs.ModeUserspace, "6.6.2", mustNotAsk, configs.ModeUserspace, "interface.mode is userspace", false},
		{"forced kernel ok", configs.ModeKernel, "6.6.2", ok, configs.ModeKernel, "interface.mode is kernel", false},
		{"forced kernel old", configs.ModeKernel, "3.10.0-1160.el7.x86_64", mustNotAsk, "", "older than", true},
		{"forced kernel no module", configs.ModeKernel, "6.6.2", noModule, "", "no WireGuard module", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Choose(tt.want, tt.release, tt.probe)
			if tt.wantErr {
				if !errors.Is(err, ErrKernelUnavailable) || !strings.Contains(err.Error(), tt.reason) || !strings.Contains(err.Error(), "auto or userspace") {
					t.Fatalf("err = %v, want ErrKernelUnavailable mentioning %q and the fix", err, tt.reason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Mode != tt.mode || !strings.Contains(got.Reason, tt.reason) {
				t.Errorf("Choose = %+v, want mode %s with reason containing %q", got, tt.mode, tt.reason)
			}
		})
	}
}
