// Package dist runs a job over several GPUs and nodes: where a process
// stands in a job started by torchrun or SLURM (one process per node,
// driving every GPU of its node), the TCP rendezvous through which rank 0
// hands the other processes the NCCL unique id, the communicator contract
// the data-parallel trainer uses (Comm, with NCCL behind it on GPUs and an
// in-process one for tests), and the goroutines that drive a process's
// GPUs (Group).
package dist

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// DefaultPort is the rendezvous port when the launcher sets none
// (torchrun's default).
const DefaultPort = 29500

// Launch is where this process stands in a job: its rank among the job's
// processes (one per node) and the address of rank 0's rendezvous.
type Launch struct {
	// Launcher is "torchrun", "slurm", or "" for a process started alone.
	Launcher string
	// Rank and Size place this process among the job's processes.
	Rank, Size int
	// Node and Nodes are the node's index and the number of nodes, as the
	// launcher says (with one process per node, Rank and Size).
	Node, Nodes int
	// Addr is host:port where rank 0 listens for the others.
	Addr string
	// Job names the job (SLURM_JOB_ID, TORCHELASTIC_RUN_ID) so a process
	// of another job on the same port is turned away; may be empty.
	Job string
}

// Single reports whether the process runs alone (no other process to meet).
func (l Launch) Single() bool { return l.Size <= 1 }

// FromEnv reads the launcher's variables: torchrun's (WORLD_SIZE, RANK,
// LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT, NNODES,
// NODE_RANK or GROUP_RANK; the port after MASTER_PORT when torchrun's
// agent keeps MASTER_PORT for its own store, TORCHELASTIC_USE_AGENT_STORE)
// take precedence over SLURM's (SLURM_PROCID,
// SLURM_NTASKS, SLURM_NODEID, SLURM_NNODES, SLURM_JOB_NODELIST, whose
// first host is rank 0's unless MASTER_ADDR says otherwise). Without
// either, the process runs alone. Each process drives every GPU of its
// node, so more than one process per node is an error that says how to
// launch.
func FromEnv(getenv func(string) string) (Launch, error) {
	num := func(key string, def int) (int, error) {
		s := strings.TrimSpace(getenv(key))
		if s == "" {
			return def, nil
		}
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 {
			return 0, fmt.Errorf("dist: %s=%q is not a non-negative integer", key, s)
		}
		return v, nil
	}
	var l Launch
	var err error
	var local, localSize int
	switch {
	case getenv("WORLD_SIZE") != "":
		l.Launcher = "torchrun"
		if l.Size, err = num("WORLD_SIZE", 1); err != nil {
			return l, err
		}
		if l.Rank, err = num("RANK", -1); err != nil {
			return l, err
		}
		if l.Rank < 0 {
			return l, fmt.Errorf("dist: WORLD_SIZE=%d is set but RANK is not; start the processes with torchrun or set RANK", l.Size)
		}
		if local, err = num("LOCAL_RANK", 0); err != nil {
			return l, err
		}
		if localSize, err = num("LOCAL_WORLD_SIZE", 1); err != nil {
			return l, err
		}
		node := "NODE_RANK"
		if getenv(node) == "" {
			node = "GROUP_RANK"
		}
		if l.Node, err = num(node, l.Rank); err != nil {
			return l, err
		}
		if l.Nodes, err = num("NNODES", l.Size); err != nil {
			return l, err
		}
		l.Job = getenv("TORCHELASTIC_RUN_ID")
		if l.Size > 1 {
			addr, port := strings.TrimSpace(getenv("MASTER_ADDR")), strings.TrimSpace(getenv("MASTER_PORT"))
			if addr == "" {
				return l, fmt.Errorf("dist: WORLD_SIZE=%d but MASTER_ADDR is not set; set it to the host of rank 0 (torchrun --master_addr, or --rdzv_endpoint)", l.Size)
			}
			if port == "" {
				port = strconv.Itoa(DefaultPort)
			}
			if getenv("TORCHELASTIC_USE_AGENT_STORE") == "True" {
				// torchrun's agent serves its own store on MASTER_PORT of
				// rank 0's node: the rendezvous takes the next port.
				if n, err := strconv.Atoi(port); err == nil {
					port = strconv.Itoa(n + 1)
				}
			}
			l.Addr = net.JoinHostPort(addr, port)
		}
		if localSize > 1 {
			return l, fmt.Errorf("dist: LOCAL_WORLD_SIZE=%d: minitron runs one process per node, which drives every GPU of the node; start torchrun with --nproc_per_node=1", localSize)
		}
	case getenv("SLURM_PROCID") != "" && getenv("SLURM_NTASKS")+getenv("SLURM_NPROCS") != "":
		l.Launcher = "slurm"
		if l.Rank, err = num("SLURM_PROCID", 0); err != nil {
			return l, err
		}
		key := "SLURM_NTASKS"
		if getenv(key) == "" {
			key = "SLURM_NPROCS"
		}
		if l.Size, err = num(key, 1); err != nil {
			return l, err
		}
		if l.Node, err = num("SLURM_NODEID", l.Rank); err != nil {
			return l, err
		}
		if l.Nodes, err = num("SLURM_NNODES", l.Size); err != nil {
			return l, err
		}
		if local, err = num("SLURM_LOCALID", 0); err != nil {
			return l, err
		}
		l.Job = getenv("SLURM_JOB_ID")
		if l.Size > l.Nodes {
			return l, fmt.Errorf("dist: SLURM started %d tasks on %d nodes; minitron runs one task per node, which drives every GPU of the node (sbatch --ntasks-per-node=1)", l.Size, l.Nodes)
		}
		if l.Size > 1 {
			host := strings.TrimSpace(getenv("MASTER_ADDR"))
			if host == "" {
				list := getenv("SLURM_JOB_NODELIST")
				if list == "" {
					list = getenv("SLURM_NODELIST")
				}
				if host, err = FirstHost(list); err != nil {
					return l, err
				}
			}
			port := strings.TrimSpace(getenv("MASTER_PORT"))
			if port == "" {
				// A port of the job's own, so two jobs sharing a node do not meet.
				job, _ := strconv.Atoi(l.Job)
				port = strconv.Itoa(20000 + job%20000)
			}
			l.Addr = net.JoinHostPort(host, port)
		}
	default:
		return Launch{Size: 1, Nodes: 1}, nil
	}
	if l.Size < 1 || l.Rank >= l.Size {
		return l, fmt.Errorf("dist: rank %d of %d processes (%s): the rank must be below the number of processes", l.Rank, l.Size, l.Launcher)
	}
	if local != 0 {
		return l, fmt.Errorf("dist: local rank %d: minitron runs one process per node (local rank 0), which drives every GPU of the node", local)
	}
	if l.Size > 1 {
		if _, p, err := net.SplitHostPort(l.Addr); err != nil {
			return l, fmt.Errorf("dist: rendezvous address %q: %v", l.Addr, err)
		} else if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return l, fmt.Errorf("dist: MASTER_PORT %q is not a port number (1 to 65535)", p)
		}
	}
	return l, nil
}

// FirstHost returns the first host of a SLURM host list such as
// "gpu[003-005,010],login1" (gpu003) or "rack[1-2]-n[07-08]" (rack1-n07).
func FirstHost(list string) (string, error) {
	list = strings.TrimSpace(list)
	if list == "" {
		return "", fmt.Errorf("dist: SLURM_JOB_NODELIST is empty; set MASTER_ADDR to the host of rank 0")
	}
	// The first item: up to the first comma outside brackets.
	depth := 0
	end := len(list)
	for i, c := range list {
		switch c {
		case '[':
			depth++
		case ']':
			depth--
		case ',':
			if depth == 0 && end == len(list) {
				end = i
			}
		}
		if depth < 0 || depth > 1 {
			return "", fmt.Errorf("dist: cannot read the SLURM host list %q; set MASTER_ADDR to the host of rank 0", list)
		}
	}
	if depth != 0 {
		return "", fmt.Errorf("dist: cannot read the SLURM host list %q (unbalanced brackets); set MASTER_ADDR to the host of rank 0", list)
	}
	item := list[:end]
	// Each bracketed range becomes its first value, zero padding kept.
	var out strings.Builder
	for {
		i := strings.IndexByte(item, '[')
		if i < 0 {
			out.WriteString(item)
			break
		}
		j := strings.IndexByte(item, ']')
		out.WriteString(item[:i])
		first := item[i+1 : j]
		if k := strings.IndexAny(first, ",-"); k >= 0 {
			first = first[:k]
		}
		if first == "" {
			return "", fmt.Errorf("dist: cannot read the SLURM host list %q; set MASTER_ADDR to the host of rank 0", list)
		}
		out.WriteString(first)
		item = item[j+1:]
	}
	if out.Len() == 0 {
		return "", fmt.Errorf("dist: the SLURM host list %q has no first host; set MASTER_ADDR to the host of rank 0", list)
	}
	return out.String(), nil
}
