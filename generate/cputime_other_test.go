//go:build !unix

package generate

import "time"

// cpuTime is not measured here.
func cpuTime() time.Duration { return 0 }
