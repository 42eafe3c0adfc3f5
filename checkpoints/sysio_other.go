//go:build !linux

package checkpoints

// residentFraction is unknown here (-1).
func (m mapping) residentFraction(n int) float64 { return -1 }
