package ordered

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"
)

// count produces the jobs 0..n-1.
func count(n int) func(send func(int) error) error {
	return func(send func(int) error) error {
		for i := range n {
			if err := send(i); err != nil {
				return err
			}
		}
		return nil
	}
}

// jitter makes jobs finish out of order.
func jitter(i int) {
	if r := rand.New(rand.NewPCG(uint64(i), 7)).IntN(4); r > 0 {
		time.Sleep(time.Duration(r) * 100 * time.Microsecond)
	}
}

func TestMapKeepsOrder(t *testing.T) {
	for _, workers := range []int{0, 1, 3, 16} {
		t.Run(fmt.Sprint(workers), func(t *testing.T) {
			var got []int
			err := Map(context.Background(), workers, count(500), func(i int) (int, error) {
				jitter(i)
				return i * i, nil
			}, func(v int) error {
				got = append(got, v)
				return nil
			})
			if err != nil || len(got) != 500 {
				t.Fatalf("%d results, %v", len(got), err)
			}
			for i, v := range got {
				if v != i*i {
					t.Fatalf("result %d is %d, want %d", i, v, i*i)
				}
			}
		})
	}
}

func TestMapErrors(t *testing.T) {
	bad := errors.New("bad")
	cases := []struct {
		name    string
		produce func(send func(int) error) error
		f       func(int) (int, error)
		consume func(int) error
		// every result before job 40 is consumed, none after job 40+slack
		maxSeen int
	}{
		{"f", count(1000), func(i int) (int, error) {
			if i == 40 {
				return 0, bad
			}
			return i, nil
		}, nil, 40},
		{"consume", count(1000), func(i int) (int, error) { return i, nil }, func(i int) error {
			if i == 40 {
				return bad
			}
			return nil
		}, 41},
		{"produce", func(send func(int) error) error {
			if err := count(40)(send); err != nil {
				return err
			}
			return bad
		}, func(i int) (int, error) { return i, nil }, nil, 40},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := runtime.NumGoroutine()
			seen := 0
			consume := func(i int) error {
				if i != seen {
					t.Errorf("result %d out of order (want %d)", i, seen)
				}
				seen++
				if c.consume != nil {
					return c.consume(i)
				}
				return nil
			}
			err := Map(context.Background(), 4, c.produce, c.f, consume)
			if !errors.Is(err, bad) {
				t.Fatalf("error %v, want %v", err, bad)
			}
			if seen < 40 || seen > c.maxSeen {
				t.Fatalf("%d results consumed, want 40..%d", seen, c.maxSeen)
			}
			waitGoroutines(t, before)
		})
	}
}

func TestMapCancel(t *testing.T) {
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	err := Map(ctx, 4, func(send func(int) error) error {
		for i := 0; ; i++ {
			if err := send(i); err != nil {
				return err
			}
		}
	}, func(i int) (int, error) { return i, nil }, func(int) error {
		if n++; n == 100 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	waitGoroutines(t, before)
}

// waitGoroutines fails when goroutines started by Map outlive it.
func waitGoroutines(t *testing.T, before int) {
	t.Helper()
	for range 100 {
		if runtime.NumGoroutine() <= before {
			return
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("%d goroutines, %d before", runtime.NumGoroutine(), before)
}
