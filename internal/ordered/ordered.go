// Package ordered runs a function over a stream of jobs on several
// goroutines and hands the results on in the order the jobs came.
package ordered

import (
	"context"
	"sync"
)

// Map calls produce, which passes jobs to send one by one; f runs on the
// jobs on workers goroutines (at least one), and consume receives f's
// results on the calling goroutine in the order of the jobs. The first
// error of f, consume or produce stops the work: send then returns an
// error, which produce should return, the jobs in flight finish, and Map
// returns that first error. Cancelling ctx stops it the same way.
func Map[In, Out any](ctx context.Context, workers int, produce func(send func(In) error) error, f func(In) (Out, error), consume func(Out) error) error {
	workers = max(workers, 1)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	type job struct {
		in   In
		out  Out
		err  error
		done chan struct{}
	}
	jobs := make(chan *job, workers)
	// Every job in order was first handed to the workers, so the consumer
	// never waits on a job nobody runs.
	order := make(chan *job, 2*workers+2)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for j := range jobs {
				if err := context.Cause(ctx); err != nil {
					j.err = err
				} else {
					j.out, j.err = f(j.in)
				}
				close(j.done)
			}
		})
	}
	produced := make(chan error, 1)
	go func() {
		defer close(order)
		defer close(jobs)
		produced <- produce(func(in In) error {
			j := &job{in: in, done: make(chan struct{})}
			select {
			case jobs <- j:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
			order <- j
			return nil
		})
	}()
	var first error
	for j := range order {
		<-j.done
		if first != nil {
			continue
		}
		if j.err != nil {
			first = j.err
		} else if err := consume(j.out); err != nil {
			first = err
		}
		if first != nil {
			cancel(first)
		}
	}
	wg.Wait()
	perr := <-produced
	switch {
	case first != nil:
		return first
	case perr != nil:
		return perr
	}
	return ctx.Err()
}
