package cuda

import (
	"errors"
	"fmt"
)

// allocator caches device memory: freed blocks go to a free list by
// rounded size and are handed out again without a driver call (cuMemAlloc
// and cuMemFree synchronize the device and take tens of microseconds).
// When the device runs out of memory, the cache is released and the
// allocation retried once.
type allocator struct {
	dev   device
	lists map[int64][]uintptr // free blocks by rounded size
	size  map[uintptr]int64   // rounded size of every live or cached block

	inUse, cached, peak int64
}

func newAllocator(d device) *allocator {
	return &allocator{dev: d, lists: map[int64][]uintptr{}, size: map[uintptr]int64{}}
}

// roundSize rounds a request up: to 512 bytes below 1 MiB, to 2 MiB above,
// so that blocks of nearby sizes are interchangeable.
func roundSize(n int64) int64 {
	const small, large = 512, 2 << 20
	if n <= 0 {
		return small
	}
	if n < 1<<20 {
		return (n + small - 1) / small * small
	}
	return (n + large - 1) / large * large
}

// alloc returns a block of at least n bytes.
func (a *allocator) alloc(n int64) (uintptr, error) {
	r := roundSize(n)
	if l := a.lists[r]; len(l) > 0 {
		p := l[len(l)-1]
		a.lists[r] = l[:len(l)-1]
		a.cached -= r
		a.use(r)
		return p, nil
	}
	p, err := a.dev.malloc(r)
	if err != nil && errors.Is(err, ErrOutOfMemory) && a.cached > 0 {
		if rerr := a.release(); rerr != nil {
			return 0, rerr
		}
		p, err = a.dev.malloc(r)
	}
	if err != nil {
		if errors.Is(err, ErrOutOfMemory) {
			return 0, fmt.Errorf("cuda: allocating %s with %s in use (peak %s): %w", human(r), human(a.inUse), human(a.peak), err)
		}
		return 0, err
	}
	a.size[p] = r
	a.use(r)
	return p, nil
}

func (a *allocator) use(r int64) {
	a.inUse += r
	a.peak = max(a.peak, a.inUse)
}

// free returns a block to the cache.
func (a *allocator) free(p uintptr) {
	r, ok := a.size[p]
	if !ok {
		panic(fmt.Sprintf("cuda: free of unknown block %#x", p))
	}
	a.lists[r] = append(a.lists[r], p)
	a.inUse -= r
	a.cached += r
}

// release gives every cached block back to the driver, once the stream
// has drained: work queued before a block was cached may still read it
// (cuMemFree waits for the device too, but only by its implementation).
func (a *allocator) release() error {
	if len(a.lists) == 0 {
		return nil
	}
	first := a.dev.sync()
	for r, l := range a.lists {
		for _, p := range l {
			if err := a.dev.free(p); err != nil && first == nil {
				first = err
			}
			delete(a.size, p)
			a.cached -= r
		}
		delete(a.lists, r)
	}
	return first
}

// releaseAll gives every block, cached or in use, back to the driver
// (when the backend closes).
func (a *allocator) releaseAll() error {
	var first error
	for p := range a.size {
		if err := a.dev.free(p); err != nil && first == nil {
			first = err
		}
	}
	a.lists, a.size = map[int64][]uintptr{}, map[uintptr]int64{}
	a.inUse, a.cached = 0, 0
	return first
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d B", n)
}
