package dist

import (
	"bytes"
	"context"
	"net"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minitron/minitron/dist/disttest"
)

// meet runs processes ranks of a job of size processes (GPUs of each
// given), rank 0 last so the others retry until it listens, and returns
// their plans and errors.
func meet(t *testing.T, size int, ranks []int, gpus []int, timeout time.Duration, job func(r int) string) ([]*Plan, []error) {
	addr := net.JoinHostPort("127.0.0.1", disttest.FreePort(t))
	plans := make([]*Plan, len(ranks))
	errs := make([]error, len(ranks))
	var wg sync.WaitGroup
	for i, r := range ranks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r == 0 {
				time.Sleep(300 * time.Millisecond)
			}
			l := Launch{Launcher: "torchrun", Rank: r, Size: size, Addr: addr}
			if job != nil {
				l.Job = job(r)
			}
			plans[i], errs[i] = Rendezvous(context.Background(), l, gpus[i], func() ([]byte, error) { return []byte("id-from-rank-0"), nil }, timeout)
		}()
	}
	wg.Wait()
	return plans, errs
}

func TestRendezvous(t *testing.T) {
	plans, errs := meet(t, 3, []int{1, 2, 0}, []int{2, 1, 4}, 20*time.Second, nil)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("process %d: %v", i, err)
		}
	}
	// Process 0 has 4 GPUs (ranks 0-3), process 1 two (4-5), process 2 one (6).
	for i, want := range []struct{ first int }{{4}, {6}, {0}} {
		p := plans[i]
		if !bytes.Equal(p.ID, []byte("id-from-rank-0")) || p.World != 7 || p.First != want.first || !reflect.DeepEqual(p.GPUs, []int{4, 2, 1}) || len(p.Hosts) != 3 {
			t.Errorf("process %d: plan %+v", i, p)
		}
	}
}

func TestRendezvousAlone(t *testing.T) {
	p, err := Rendezvous(context.Background(), Launch{Size: 1}, 8, func() ([]byte, error) { return []byte{7}, nil }, 0)
	if err != nil || p.World != 8 || p.First != 0 || !bytes.Equal(p.ID, []byte{7}) {
		t.Fatalf("%+v, %v", p, err)
	}
}

// A process that never comes is named, on rank 0 and on those that came.
func TestRendezvousTimeout(t *testing.T) {
	_, errs := meet(t, 4, []int{0, 1, 3}, []int{1, 1, 1}, time.Second, nil)
	for i, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "process(es) 2 of 4 did not arrive within 1s") {
			t.Errorf("process %d: %v, want one naming process 2", i, err)
		}
	}
	// Without rank 0, the others say whom they could not reach.
	_, errs = meet(t, 2, []int{1}, []int{1}, time.Second, nil)
	if errs[0] == nil || !strings.Contains(errs[0].Error(), "process 1 could not meet rank 0 at 127.0.0.1:") || !strings.Contains(errs[0].Error(), "MASTER_ADDR") {
		t.Errorf("without rank 0: %v", errs[0])
	}
}

func TestRendezvousRefusals(t *testing.T) {
	// Two processes claim rank 1: one of them is told so; rank 0 then
	// waits for the missing rank 2 and gives up.
	_, errs := meet(t, 3, []int{0, 1, 1}, []int{1, 1, 1}, time.Second, nil)
	var dup int
	for _, err := range errs {
		if err != nil && strings.Contains(err.Error(), "two processes say they are rank 1") {
			dup++
		}
	}
	if dup != 1 {
		t.Errorf("errors %v: want one saying rank 1 came twice", errs)
	}
	// A process of another job is turned away.
	_, errs = meet(t, 2, []int{0, 1}, []int{1, 1}, time.Second, func(r int) string { return "job" + strconv.Itoa(r) })
	if errs[1] == nil || !strings.Contains(errs[1].Error(), "process of job job1 knocked at the rendezvous of job job0") {
		t.Errorf("foreign job: %v", errs[1])
	}
}
