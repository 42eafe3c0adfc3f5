package dist

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// DefaultTimeout is how long the rendezvous waits for every process.
const DefaultTimeout = 5 * time.Minute

// Plan is what the rendezvous settles: the communicator's id and where
// every process's GPUs sit among the job's ranks (one rank per GPU,
// process 0's GPUs first).
type Plan struct {
	ID    []byte   // the NCCL unique id rank 0 made
	World int      // ranks (GPUs) in the job
	First int      // global rank of this process's first GPU
	GPUs  []int    // GPUs of each process, by process rank
	Hosts []string // host name of each process
}

// hello is what a process sends rank 0; reply is the answer.
type hello struct {
	Rank int    `json:"rank"`
	Size int    `json:"size"`
	GPUs int    `json:"gpus"`
	Host string `json:"host"`
	Job  string `json:"job,omitempty"`
}

type reply struct {
	Error string   `json:"error,omitempty"`
	ID    []byte   `json:"id,omitempty"`
	GPUs  []int    `json:"gpus,omitempty"`
	Hosts []string `json:"hosts,omitempty"`
}

// Rendezvous meets the job's other processes: rank 0 listens on the port
// of l.Addr, waits for every other process to say how many GPUs it drives,
// makes the communicator's id with newID and sends it and the layout to
// all; the others connect to l.Addr (retrying until rank 0 listens) and
// receive them. Either side gives up after timeout with an error naming
// who did not come. A process running alone makes the id itself.
func Rendezvous(ctx context.Context, l Launch, gpus int, newID func() ([]byte, error), timeout time.Duration) (*Plan, error) {
	if gpus < 1 {
		return nil, fmt.Errorf("dist: a process needs at least one GPU")
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	host, _ := os.Hostname()
	if l.Single() {
		id, err := newID()
		if err != nil {
			return nil, err
		}
		return &Plan{ID: id, World: gpus, GPUs: []int{gpus}, Hosts: []string{host}}, nil
	}
	// Once connected, a process waits a while past its own deadline for
	// rank 0's answer: rank 0 answers, with an error if it must, when its
	// own wait ends, which began when it started.
	answerBy, cancelAnswer := context.WithTimeout(ctx, timeout+time.Minute)
	defer cancelAnswer()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	me := hello{Rank: l.Rank, Size: l.Size, GPUs: gpus, Host: host, Job: l.Job}
	var r *reply
	var err error
	if l.Rank == 0 {
		r, err = serve(ctx, l, me, newID, timeout)
	} else {
		r, err = join(ctx, answerBy, l, me, timeout)
	}
	if err != nil {
		return nil, err
	}
	p := &Plan{ID: r.ID, GPUs: r.GPUs, Hosts: r.Hosts}
	for i, g := range r.GPUs {
		if i < l.Rank {
			p.First += g
		}
		p.World += g
	}
	return p, nil
}

// serve is rank 0's side.
func serve(ctx context.Context, l Launch, me hello, newID func() ([]byte, error), timeout time.Duration) (*reply, error) {
	_, port, _ := net.SplitHostPort(l.Addr)
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", net.JoinHostPort("", port))
	if err != nil {
		return nil, fmt.Errorf("dist: rank 0 cannot listen on port %s for the other processes: %v (set MASTER_PORT to a free port)", port, err)
	}
	defer ln.Close()
	go func() { <-ctx.Done(); ln.Close() }()

	type peer struct {
		h    hello
		conn net.Conn
	}
	peers := map[int]peer{0: {h: me}}
	defer func() {
		for _, p := range peers {
			if p.conn != nil {
				p.conn.Close()
			}
		}
	}()
	answer := func(c net.Conn, r reply) {
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		b, _ := json.Marshal(r)
		c.Write(append(b, '\n'))
	}
	for len(peers) < l.Size {
		c, err := ln.Accept()
		if err != nil {
			var missing []string
			for r := range l.Size {
				if _, ok := peers[r]; !ok {
					missing = append(missing, strconv.Itoa(r))
				}
			}
			why := fmt.Sprintf("dist: rendezvous on port %s: process(es) %s of %d did not arrive within %v; check that every node started minitron with the same launcher settings and can reach %s",
				port, strings.Join(missing, ", "), l.Size, timeout, l.Addr)
			if ctx.Err() == nil {
				why = fmt.Sprintf("dist: rendezvous on port %s: %v", port, err)
			} else if errors.Is(ctx.Err(), context.Canceled) {
				why = "dist: rendezvous interrupted"
			}
			for _, p := range peers {
				if p.conn != nil {
					answer(p.conn, reply{Error: why})
				}
			}
			return nil, errors.New(why)
		}
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		line, err := bufio.NewReader(c).ReadBytes('\n')
		var h hello
		if err == nil {
			err = json.Unmarshal(line, &h)
		}
		var bad string
		switch {
		case err != nil:
			c.Close() // not one of ours
			continue
		case l.Job != "" && h.Job != "" && h.Job != l.Job:
			bad = fmt.Sprintf("process of job %s knocked at the rendezvous of job %s", h.Job, l.Job)
		case h.Size != l.Size:
			bad = fmt.Sprintf("process %d says the job has %d processes, rank 0 says %d", h.Rank, h.Size, l.Size)
		case h.Rank <= 0 || h.Rank >= l.Size:
			bad = fmt.Sprintf("a process says it is rank %d of %d", h.Rank, l.Size)
		case peers[h.Rank].h.Host != "":
			bad = fmt.Sprintf("two processes say they are rank %d (on %s and %s)", h.Rank, peers[h.Rank].h.Host, h.Host)
		case h.GPUs < 1:
			bad = fmt.Sprintf("process %d on %s drives no GPU", h.Rank, h.Host)
		}
		if bad != "" {
			answer(c, reply{Error: "dist: " + bad})
			c.Close()
			continue
		}
		c.SetReadDeadline(time.Time{})
		peers[h.Rank] = peer{h: h, conn: c}
	}
	id, err := newID()
	if err != nil {
		for _, p := range peers {
			if p.conn != nil {
				answer(p.conn, reply{Error: "dist: rank 0 could not make the communicator's id: " + err.Error()})
			}
		}
		return nil, err
	}
	r := reply{ID: id}
	ranks := make([]int, 0, len(peers))
	for k := range peers {
		ranks = append(ranks, k)
	}
	sort.Ints(ranks)
	for _, k := range ranks {
		r.GPUs = append(r.GPUs, peers[k].h.GPUs)
		r.Hosts = append(r.Hosts, peers[k].h.Host)
	}
	for _, p := range peers {
		if p.conn != nil {
			answer(p.conn, r)
		}
	}
	return &r, nil
}

// join is the side of the other processes: it connects until ctx ends,
// and waits for the answer until answerBy ends.
func join(ctx, answerBy context.Context, l Launch, me hello, timeout time.Duration) (*reply, error) {
	var d net.Dialer
	var last error
	for {
		c, err := d.DialContext(ctx, "tcp", l.Addr)
		if err == nil {
			var r *reply
			r, err = exchange(answerBy, c, me)
			c.Close()
			switch {
			case err == nil && r.Error != "":
				return nil, errors.New(r.Error)
			case err == nil:
				return r, nil
			case !errors.Is(err, errRetry) && answerBy.Err() == nil:
				return nil, fmt.Errorf("dist: process %d: rendezvous with rank 0 at %s: %w", l.Rank, l.Addr, err)
			}
		}
		last = err
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.Canceled) {
				return nil, fmt.Errorf("dist: rendezvous interrupted")
			}
			return nil, fmt.Errorf("dist: process %d could not meet rank 0 at %s within %v (last error: %v); check MASTER_ADDR and MASTER_PORT and that rank 0 started",
				l.Rank, l.Addr, timeout, last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// errRetry marks a connection that closed before rank 0 answered (rank 0
// of another attempt, or a listener that is not rank 0's yet): try again.
var errRetry = errors.New("the connection closed before an answer")

func exchange(ctx context.Context, c net.Conn, me hello) (*reply, error) {
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	b, _ := json.Marshal(me)
	if _, err := c.Write(append(b, '\n')); err != nil {
		return nil, errRetry
	}
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, errRetry
	}
	var r reply
	if err := json.Unmarshal(line, &r); err != nil {
		return nil, fmt.Errorf("unreadable answer %q", strings.TrimSpace(string(line)))
	}
	return &r, nil
}
