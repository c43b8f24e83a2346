// Package poll waits for a condition with a deadline, for tests and tools
// that must never sleep a fixed time where a condition can be checked.
package poll

import "time"

// Interval is how often Until checks.
const Interval = 50 * time.Millisecond

// Until checks cond every Interval until it holds (true) or timeout passes
// (false). cond runs at least once.
func Until(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(Interval)
	}
}
