package cuda

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/minitron/minitron/backend"
)

// NCCL (libnccl.so.2) is found like the other CUDA libraries: on
// LD_LIBRARY_PATH, under $CUDA_HOME, in the system's library folders, or
// in a Python environment's nvidia/nccl/lib (or nvidia/cu13/lib) folder.
// Version 2.10 is the first with bfloat16.
var ncclSpec = libSpec{what: "NCCL", names: []string{"libnccl.so.2", "libnccl.so"}, minVersion: 2100}

// nccl binds the NCCL calls data-parallel training uses.
type nccl struct {
	lib *library

	getVersion, getUniqueID, commInitRank, commDestroy, commAbort  proc
	getErrorString, allReduce, reduceScatter, allGather, broadcast proc
	getLastError                                                   proc // optional (NCCL 2.13+)
}

var ncclLib struct {
	sync.Mutex
	n    *nccl
	err  error
	done bool
}

// loadNCCL finds and binds NCCL once per process.
func loadNCCL() (*nccl, error) {
	ncclLib.Lock()
	defer ncclLib.Unlock()
	if !ncclLib.done {
		ncclLib.done = true
		ncclLib.n, ncclLib.err = openNCCL(osEnv)
	}
	return ncclLib.n, ncclLib.err
}

func openNCCL(e env) (*nccl, error) {
	lib, err := e.openSpec(ncclSpec, 0, func(l *library) int { return (&nccl{lib: l}).version() })
	if err != nil {
		return nil, err
	}
	n := &nccl{lib: lib}
	err = lib.bind(map[string]*proc{
		"ncclGetVersion": &n.getVersion, "ncclGetUniqueId": &n.getUniqueID, "ncclCommInitRank": &n.commInitRank,
		"ncclCommDestroy": &n.commDestroy, "ncclCommAbort": &n.commAbort, "ncclGetErrorString": &n.getErrorString,
		"ncclAllReduce": &n.allReduce, "ncclReduceScatter": &n.reduceScatter, "ncclAllGather": &n.allGather,
		"ncclBroadcast": &n.broadcast,
	})
	if err != nil {
		return nil, err
	}
	n.lib.bindFirst(&n.getLastError, "ncclGetLastError") // absent before 2.13: errors then say less
	return n, nil
}

// version returns NCCL's version as major*1000 + minor*10 (the units of
// libSpec.minVersion), or 0 when it cannot tell. NCCL's own code is
// major*10000 + minor*100 + patch since 2.9, major*1000 + minor*100 +
// patch before.
func (n *nccl) version() int {
	major, minor, _, ok := n.versionParts()
	if !ok {
		return 0
	}
	return major*1000 + minor*10
}

// versionParts decodes ncclGetVersion's code; ok is false when it cannot
// tell.
func (n *nccl) versionParts() (major, minor, patch int, ok bool) {
	if n.getVersion.addr == 0 && n.lib.bindFirst(&n.getVersion, "ncclGetVersion") != nil {
		return 0, 0, 0, false
	}
	var v int32
	if int32(n.getVersion.call(uintptr(unsafe.Pointer(&v)))) != 0 || v <= 0 {
		return 0, 0, 0, false
	}
	c := int(v)
	if c >= 10000 {
		return c / 10000, c % 10000 / 100, c % 100, true
	}
	return c / 1000, c % 1000 / 100, c % 100, true
}

// NCCL results (ncclResult_t).
var ncclStatus = map[int]struct{ name, hint string }{
	1: {"ncclUnhandledCudaError", "a CUDA call inside NCCL failed; run with NCCL_DEBUG=INFO for details"},
	2: {"ncclSystemError", "a system call failed (network, shared memory); run with NCCL_DEBUG=INFO for details"},
	3: {"ncclInternalError", ""},
	4: {"ncclInvalidArgument", ""},
	5: {"ncclInvalidUsage", "every rank must call the same collectives in the same order, with the same sizes"},
	6: {"ncclRemoteError", "another rank failed or its process exited; see that rank's error"},
	7: {"ncclInProgress", ""},
}

// check turns an NCCL result into an error naming call, with NCCL's own
// description of the latest failure when it gives one.
func (n *nccl) check(call string, comm uintptr, status uintptr) error {
	err := statusError(ncclStatus, call, status)
	if err == nil {
		return nil
	}
	e := err.(*Error)
	msg := ""
	if n.getLastError.addr != 0 {
		msg = cReturned(n.getLastError.call(comm))
	}
	if msg == "" {
		msg = cReturned(n.getErrorString.call(uintptr(uint32(e.Status))))
	}
	if msg != "" {
		e.Name += ": " + msg
	}
	return e
}

// cReturned copies the C string a C function returned (as an integer),
// "" for NULL. The string is the C library's, never Go memory.
func cReturned(p uintptr) string {
	if p == 0 {
		return ""
	}
	return cString(*(**byte)(unsafe.Pointer(&p)))
}

// UniqueID names a communicator: rank 0 makes it (NewUniqueID) and hands
// it to the other ranks, which pass it to NewComm. For the real NCCL it
// holds the address rank 0 listens on.
type UniqueID [128]byte

// NewUniqueID makes the id of a new communicator (ncclGetUniqueId).
func NewUniqueID() (UniqueID, error) {
	var id UniqueID
	n, err := loadNCCL()
	if err != nil {
		return id, err
	}
	return id, n.check("ncclGetUniqueId", 0, n.getUniqueID.call(uintptr(unsafe.Pointer(&id[0]))))
}

// release returns NCCL's version as it names it ("2.21.5"), or "" when
// it cannot tell.
func (n *nccl) release() string {
	major, minor, patch, ok := n.versionParts()
	if !ok {
		return ""
	}
	return fmt.Sprintf("%d.%d.%d", major, minor, patch)
}

// NCCLVersion returns the version of the NCCL found ("2.21.5").
func NCCLVersion() (string, error) {
	n, err := loadNCCL()
	if err != nil {
		return "", err
	}
	if v := n.release(); v != "" {
		return v, nil
	}
	return "", fmt.Errorf("cuda: %s does not tell its version (ncclGetVersion failed)", n.lib.path)
}

// initRank calls ncclCommInitRank, whose id argument is a 128-byte
// struct passed by value: on x86-64 (System V) it goes on the stack, the
// integer arguments after it still taking registers; on arm64 (AAPCS64)
// a pointer to a copy takes its place.
func (n *nccl) initRank(comm *uintptr, size, rank int, id UniqueID) uintptr {
	switch runtime.GOARCH {
	case "amd64":
		// comm is converted in the call expression itself, so that
		// call's go:uintptrescapes keeps it on the heap: an address
		// built into a slice beforehand could be left stale by a stack
		// move (the caller's variable would not escape).
		var w [16]uintptr
		for i := range w {
			w[i] = uintptr(*(*uint64)(unsafe.Pointer(&id[8*i])))
		}
		return n.commInitRank.call(uintptr(unsafe.Pointer(comm)), uintptr(size), uintptr(rank), 0, 0, 0,
			w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8], w[9], w[10], w[11], w[12], w[13], w[14], w[15])
	case "arm64":
		cp := id
		return n.commInitRank.call(uintptr(unsafe.Pointer(comm)), uintptr(size), uintptr(unsafe.Pointer(&cp)), uintptr(rank))
	}
	panic("cuda: ncclCommInitRank is bound for amd64 and arm64 only")
}

// Comm is one rank of an NCCL communicator on a backend's GPU. Its
// collectives are queued on the backend's stream, in order with its
// kernels, and read and write tensors of the backend. Every rank must
// call the same collectives in the same order with the same sizes.
// Like the Backend, a Comm is not safe for concurrent use.
type Comm struct {
	b          *Backend
	g          *gpu
	nc         *nccl
	comm       atomic.Uintptr // ncclComm_t; 0 once closed or aborted
	rank, size int
}

// NewComm joins b's GPU to the communicator id as rank of size ranks. It
// returns once all size ranks have joined, so every rank must call it at
// the same time: from a goroutine of its own in this process (one per
// GPU), or in another process.
func (b *Backend) NewComm(id UniqueID, rank, size int) (*Comm, error) {
	g, ok := b.dev.(*gpu)
	if !ok {
		return nil, fmt.Errorf("cuda: NCCL needs an open GPU backend")
	}
	if size < 1 || rank < 0 || rank >= size {
		return nil, fmt.Errorf("cuda: rank %d of a communicator of %d ranks", rank, size)
	}
	n, err := loadNCCL()
	if err != nil {
		return nil, err
	}
	c := &Comm{b: b, g: g, nc: n, rank: rank, size: size}
	// NCCL takes the device from the context current on the thread.
	var comm uintptr
	err = g.in(func() error {
		return n.check("ncclCommInitRank", 0, n.initRank(&comm, size, rank, id))
	})
	if err != nil {
		return nil, fmt.Errorf("%w (rank %d of %d on %s)", err, rank, size, b.inf.Name)
	}
	c.comm.Store(comm)
	return c, nil
}

// Rank returns the rank of this member.
func (c *Comm) Rank() int { return c.rank }

// Size returns the number of ranks.
func (c *Comm) Size() int { return c.size }

// NCCL data types and reductions.
const (
	ncclFloat32  = 7
	ncclFloat64  = 8
	ncclBfloat16 = 9
	ncclSum      = 0
)

// tensor checks that t is a float tensor of the comm's backend with n
// elements (n < 0: any) and returns it with its NCCL data type.
func (c *Comm) tensor(op, what string, t backend.Tensor, n int) (*Tensor, uintptr, error) {
	ct, ok := t.(*Tensor)
	if !ok || ct.b != c.b {
		return nil, 0, fmt.Errorf("cuda: %s: the %s is a %T, not a tensor of this GPU's backend", op, what, t)
	}
	if n >= 0 && ct.numel() != n {
		return nil, 0, fmt.Errorf("cuda: %s: the %s has %d elements, want %d", op, what, ct.numel(), n)
	}
	switch ct.dt {
	case backend.F32:
		return ct, ncclFloat32, nil
	case backend.BF16:
		return ct, ncclBfloat16, nil
	}
	return nil, 0, fmt.Errorf("cuda: %s: the %s is %v; collectives take float32 or bfloat16 tensors", op, what, ct.dt)
}

// call runs an NCCL call on the communicator with the GPU's context current.
func (c *Comm) call(name string, f func(comm uintptr) uintptr) error {
	comm := c.comm.Load()
	if comm == 0 {
		return fmt.Errorf("cuda: %s on a closed or aborted communicator (rank %d of %d)", name, c.rank, c.size)
	}
	return c.g.in(func() error { return c.nc.check(name, comm, f(comm)) })
}

// AllReduce replaces t on every rank by the sum of the ranks' t.
func (c *Comm) AllReduce(t backend.Tensor) error {
	ct, dt, err := c.tensor("AllReduce", "tensor", t, -1)
	if err != nil {
		return err
	}
	return c.call("ncclAllReduce", func(comm uintptr) uintptr {
		return c.nc.allReduce.call(ct.ptr, ct.ptr, uintptr(ct.numel()), dt, ncclSum, comm, c.g.stream)
	})
}

// ReduceScatter sums the ranks' src, which has Size()×numel(dst)
// elements, and leaves part r of the sum (elements [r·n, (r+1)·n)) in
// rank r's dst. dst may be that part of src.
func (c *Comm) ReduceScatter(dst, src backend.Tensor) error {
	d, dt, err := c.tensor("ReduceScatter", "destination", dst, -1)
	if err != nil {
		return err
	}
	s, st, err := c.tensor("ReduceScatter", "source", src, d.numel()*c.size)
	if err != nil {
		return err
	}
	if dt != st {
		return fmt.Errorf("cuda: ReduceScatter from %v into %v", s.dt, d.dt)
	}
	return c.call("ncclReduceScatter", func(comm uintptr) uintptr {
		return c.nc.reduceScatter.call(s.ptr, d.ptr, uintptr(d.numel()), dt, ncclSum, comm, c.g.stream)
	})
}

// AllGather concatenates the ranks' src, in rank order, into every rank's
// dst (Size()×numel(src) elements). src may be part Rank() of dst.
func (c *Comm) AllGather(dst, src backend.Tensor) error {
	s, st, err := c.tensor("AllGather", "source", src, -1)
	if err != nil {
		return err
	}
	d, dt, err := c.tensor("AllGather", "destination", dst, s.numel()*c.size)
	if err != nil {
		return err
	}
	if dt != st {
		return fmt.Errorf("cuda: AllGather from %v into %v", s.dt, d.dt)
	}
	return c.call("ncclAllGather", func(comm uintptr) uintptr {
		return c.nc.allGather.call(s.ptr, d.ptr, uintptr(s.numel()), dt, comm, c.g.stream)
	})
}

// Broadcast copies rank root's t into every rank's t.
func (c *Comm) Broadcast(t backend.Tensor, root int) error {
	ct, dt, err := c.tensor("Broadcast", "tensor", t, -1)
	if err != nil {
		return err
	}
	if root < 0 || root >= c.size {
		return fmt.Errorf("cuda: Broadcast from rank %d of %d", root, c.size)
	}
	return c.call("ncclBroadcast", func(comm uintptr) uintptr {
		return c.nc.broadcast.call(ct.ptr, ct.ptr, uintptr(ct.numel()), dt, uintptr(root), comm, c.g.stream)
	})
}

// SumFloat64 replaces v on every rank by the sum of the ranks' v
// (losses, squared norms, counts), through the device, and waits for it.
func (c *Comm) SumFloat64(v []float64) error {
	if len(v) == 0 {
		return nil
	}
	bytes := int64(8 * len(v))
	p, err := c.b.mem.alloc(bytes)
	if err != nil {
		return err
	}
	defer c.b.mem.free(p)
	if err := c.g.htod(p, unsafe.Pointer(&v[0]), bytes); err != nil {
		return err
	}
	err = c.call("ncclAllReduce", func(comm uintptr) uintptr {
		return c.nc.allReduce.call(p, p, uintptr(len(v)), ncclFloat64, ncclSum, comm, c.g.stream)
	})
	if err != nil {
		return err
	}
	return c.g.dtoh(unsafe.Pointer(&v[0]), p, bytes)
}

// Abort ends the communicator at once (ncclCommAbort), when a rank has
// failed: collectives blocked on it, in this rank or others, fail instead
// of waiting for ever. Unlike the other methods it may be called while
// another goroutine is inside a collective of c. Closing afterwards does
// nothing.
func (c *Comm) Abort() {
	if comm := c.comm.Swap(0); comm != 0 {
		c.g.in(func() error { c.nc.commAbort.call(comm); return nil })
	}
}

// Close leaves the communicator (ncclCommDestroy). Closing again, or
// after Abort, does nothing.
func (c *Comm) Close() error {
	comm := c.comm.Swap(0)
	if comm == 0 {
		return nil
	}
	return c.g.in(func() error { return c.nc.check("ncclCommDestroy", comm, c.nc.commDestroy.call(comm)) })
}
