package meshsync

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// feed is a document the followers long-poll: the cluster file, or where
// the nodes are seen from. A poll names the revision it has; it is
// answered at once when the feed has another, else when the feed changes,
// or with 304 after the wait.
type feed struct {
	mu      sync.Mutex
	data    []byte
	rev     string
	changed chan struct{} // closed and replaced by set
	// waiting counts the polls waiting on changed until they answered.
	waiting *sync.WaitGroup
}

func newFeed(data []byte) *feed {
	return &feed{data: data, rev: Revision(data), changed: make(chan struct{}), waiting: &sync.WaitGroup{}}
}

// set publishes data and wakes the waiting polls, even for the same data
// when always (a poll that wakes with the revision it has asks again at
// once, with what it knows now). Else it returns false, and wakes nobody,
// when data is what the feed has. The WaitGroup is the polls that were
// waiting, done when they have answered.
func (f *feed) set(data []byte, always bool) (*sync.WaitGroup, bool) {
	rev := Revision(data)
	f.mu.Lock()
	defer f.mu.Unlock()
	if rev == f.rev && f.data != nil && !always {
		return nil, false
	}
	answered := f.waiting
	f.data, f.rev = data, rev
	close(f.changed)
	f.changed, f.waiting = make(chan struct{}), &sync.WaitGroup{}
	return answered, true
}

func (f *feed) current() ([]byte, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.data, f.rev
}

// poll answers a follower that has revision have, waiting at most wait.
func (f *feed) poll(ctx context.Context, have string, wait time.Duration) answer {
	f.mu.Lock()
	data, rev, changed := f.data, f.rev, f.changed
	if rev != have {
		f.mu.Unlock()
		return answer{status: http.StatusOK, rev: rev, body: data}
	}
	done := f.waiting.Done
	f.waiting.Add(1)
	f.mu.Unlock()
	defer done()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-changed:
		data, rev = f.current()
		return answer{status: http.StatusOK, rev: rev, body: data}
	case <-timer.C:
		return answer{status: http.StatusNotModified, rev: rev}
	case <-ctx.Done():
		return answer{status: http.StatusServiceUnavailable}
	}
}
