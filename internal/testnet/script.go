//go:build linux

package testnet

import "fmt"

// Script is a T for programs (the demo, the benchmarks) that use the
// harness outside `go test`: Fatal unwinds to Do, and Teardown removes
// everything the harness created.
type Script struct {
	cleanups []func()
	failed   bool
}

type scriptAbort struct{ msg string }

// Do runs f and returns the message of a Fatal inside it as an error.
func (s *Script) Do(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			a, ok := r.(scriptAbort)
			if !ok {
				panic(r)
			}
			err = fmt.Errorf("%s", a.msg)
		}
	}()
	f()
	return nil
}

// Teardown runs the cleanups, last registered first.
func (s *Script) Teardown() {
	for i := len(s.cleanups) - 1; i >= 0; i-- {
		s.cleanups[i]()
	}
	s.cleanups = nil
}

func (s *Script) Helper()                           {}
func (s *Script) Fatal(args ...any)                 { s.failed = true; panic(scriptAbort{fmt.Sprint(args...)}) }
func (s *Script) Fatalf(format string, args ...any) { s.Fatal(fmt.Sprintf(format, args...)) }
func (s *Script) Skip(args ...any)                  { s.Fatal(args...) }
func (s *Script) Skipf(format string, args ...any)  { s.Fatalf(format, args...) }
func (s *Script) Cleanup(f func())                  { s.cleanups = append(s.cleanups, f) }
func (s *Script) Failed() bool                      { return s.failed }
