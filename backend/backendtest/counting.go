package backendtest

import (
	"sync"

	"github.com/minitron/minitron/backend"
)

// Counting wraps a backend and counts the tensors made through it and not
// yet freed, so tests can check that a function frees its workspaces.
type Counting struct {
	backend.Backend
	mu   sync.Mutex
	live map[backend.Tensor]bool
}

// NewCounting wraps b.
func NewCounting(b backend.Backend) *Counting {
	return &Counting{Backend: b, live: map[backend.Tensor]bool{}}
}

func (c *Counting) track(t backend.Tensor, err error) (backend.Tensor, error) {
	if err == nil {
		c.mu.Lock()
		c.live[t] = true
		c.mu.Unlock()
	}
	return t, err
}

// New allocates through the wrapped backend.
func (c *Counting) New(dt backend.DType, shape ...int) (backend.Tensor, error) {
	return c.track(c.Backend.New(dt, shape...))
}

// FromFloat32 allocates through the wrapped backend.
func (c *Counting) FromFloat32(data []float32, shape ...int) (backend.Tensor, error) {
	return c.track(c.Backend.FromFloat32(data, shape...))
}

// FromInt32 allocates through the wrapped backend.
func (c *Counting) FromInt32(data []int32, shape ...int) (backend.Tensor, error) {
	return c.track(c.Backend.FromInt32(data, shape...))
}

// Free frees through the wrapped backend; freeing a tensor twice, or one
// made elsewhere, panics (a programmer's error the test should see).
func (c *Counting) Free(t backend.Tensor) {
	c.mu.Lock()
	ok := c.live[t]
	delete(c.live, t)
	c.mu.Unlock()
	if !ok {
		panic("backendtest: freeing a tensor that is not live")
	}
	c.Backend.Free(t)
}

// Live returns the number of tensors made and not freed.
func (c *Counting) Live() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.live)
}
