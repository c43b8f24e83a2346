package appliance

import (
	"log/slog"
	"math"
	"os"
	"runtime/debug"

	"github.com/wgk3s/wgk3s/configs"
)

// applyMemoryLimit sets the Go runtime's soft memory limit from
// runtime.memory_limit, at start and on every reload. wireguard-go keeps its
// 64 KiB packet buffers in sync.Pools that grow with throughput; the limit
// makes the garbage collector hand them back before the process outgrows a
// small server that k3s also needs. GOMEMLIMIT in the environment wins, so
// an operator can override it from the unit without editing the file.
func applyMemoryLimit(rt configs.Runtime, log *slog.Logger) {
	if env := os.Getenv("GOMEMLIMIT"); env != "" {
		log.Info("memory limit from GOMEMLIMIT in the environment; runtime.memory_limit ignored", "GOMEMLIMIT", env)
		return
	}
	limit := rt.MemoryLimit
	if limit == 0 {
		limit = math.MaxInt64 // the runtime's "no limit"
	}
	if prev := debug.SetMemoryLimit(limit); prev != limit {
		log.Info("memory limit set", "bytes", rt.MemoryLimit)
	}
}
