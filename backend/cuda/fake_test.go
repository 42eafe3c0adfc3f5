package cuda

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"
	"time"
	"unsafe"

	"github.com/minitron/minitron/backend"
)

// fakeDevice keeps "device" memory on the host so the Go side of the
// backend (shape checks, argument packing, memory management, the
// row-major to column-major GEMM mapping) runs without a GPU. It executes
// cuBLAS GemmEx (column-major, as cuBLAS defines it) and the simplest
// kernels; other launches are only recorded.
type fakeDevice struct {
	blocks  map[uintptr][]byte
	next    uintptr
	last    uintptr // the block of the latest access
	limit   int64   // bytes; 0 means unlimited
	used    int64
	mallocs int
	frees   int
	syncs   int
	// freeSyncs is syncs at each free (0: before any synchronization).
	freeSyncs []int
	closes    int
	launches  []fakeLaunch
}

type fakeLaunch struct {
	name        string
	grid, block [3]uint32
	shared      int
	args        []arg
}

func newFakeDevice() *fakeDevice {
	return &fakeDevice{blocks: map[uintptr][]byte{}, next: 1 << 20}
}

func (f *fakeDevice) info() deviceInfo {
	return deviceInfo{Name: "fake", Major: 9, Minor: 0, SMs: 4, Memory: 1 << 30, MaxShared: 227 << 10, Driver: 13000}
}

func (f *fakeDevice) malloc(n int64) (uintptr, error) {
	if f.limit > 0 && f.used+n > f.limit {
		return 0, &Error{Call: "cuMemAlloc_v2", Status: 2, Name: "CUDA_ERROR_OUT_OF_MEMORY"}
	}
	p := f.next
	f.next += uintptr((n + 255) / 256 * 256)
	f.blocks[p] = make([]byte, n)
	f.used += n
	f.mallocs++
	return p, nil
}

func (f *fakeDevice) free(p uintptr) error {
	b, ok := f.blocks[p]
	if !ok {
		return fmt.Errorf("fake: free of %#x", p)
	}
	f.used -= int64(len(b))
	delete(f.blocks, p)
	f.frees++
	f.freeSyncs = append(f.freeSyncs, f.syncs)
	return nil
}

// mem returns the bytes at device address p, n long.
func (f *fakeDevice) mem(p uintptr, n int64) []byte {
	if b, ok := f.blocks[f.last]; ok && p >= f.last && p+uintptr(n) <= f.last+uintptr(len(b)) {
		return b[p-f.last : int64(p-f.last)+n]
	}
	for base, b := range f.blocks {
		if p >= base && p+uintptr(n) <= base+uintptr(len(b)) {
			f.last = base
			return b[p-base : int64(p-base)+n]
		}
	}
	panic(fmt.Sprintf("fake: access [%#x, +%d) outside every allocation", p, n))
}

func (f *fakeDevice) htod(dst uintptr, src unsafe.Pointer, n int64) error {
	copy(f.mem(dst, n), unsafe.Slice((*byte)(src), n))
	return nil
}

func (f *fakeDevice) dtoh(dst unsafe.Pointer, src uintptr, n int64) error {
	copy(unsafe.Slice((*byte)(dst), n), f.mem(src, n))
	return nil
}

func (f *fakeDevice) dtod(dst, src uintptr, n int64) error {
	copy(f.mem(dst, n), f.mem(src, n))
	return nil
}

func (f *fakeDevice) memset32(dst uintptr, v uint32, n int64) error {
	m := f.mem(dst, 4*n)
	for i := int64(0); i < n; i++ {
		binary.LittleEndian.PutUint32(m[4*i:], v)
	}
	return nil
}

func (f *fakeDevice) sync() error { f.syncs++; return nil }

func (f *fakeDevice) close() error { f.closes++; return nil }

func (f *fakeDevice) elapsed(fn func() error) (time.Duration, error) {
	start := time.Now()
	err := fn()
	return time.Since(start), err
}
func (f *fakeDevice) memInfo() (free, total int64, _ error) { return 1 << 30, 1 << 30, nil }

// ld and st read and write element i of a tagged float address.
func (f *fakeDevice) ld(p uint64, i int) float32 {
	if p&1 != 0 {
		return math.Float32frombits(uint32(binary.LittleEndian.Uint16(f.mem(uintptr(p-1)+uintptr(2*i), 2))) << 16)
	}
	return math.Float32frombits(binary.LittleEndian.Uint32(f.mem(uintptr(p)+uintptr(4*i), 4)))
}

func (f *fakeDevice) st(p uint64, i int, v float32) {
	if p&1 != 0 {
		binary.LittleEndian.PutUint16(f.mem(uintptr(p-1)+uintptr(2*i), 2), backend.F32ToBF16(v))
		return
	}
	binary.LittleEndian.PutUint32(f.mem(uintptr(p)+uintptr(4*i), 4), math.Float32bits(v))
}

func (f *fakeDevice) launch(k string, grid, block [3]uint32, shared int, args []arg) error {
	f.launches = append(f.launches, fakeLaunch{k, grid, block, shared, append([]arg(nil), args...)})
	if block[0]*block[1]*block[2] > 1024 || block[0] == 0 {
		return fmt.Errorf("fake: kernel %s launched with block %v", k, block)
	}
	if shared > f.info().MaxShared {
		return fmt.Errorf("fake: kernel %s needs %d bytes of shared memory", k, shared)
	}
	f32 := func(a arg) float32 { return math.Float32frombits(uint32(a.bits)) }
	switch k {
	case "fill":
		for i := range int(args[1].bits) {
			f.st(args[0].bits, i, f32(args[2]))
		}
	case "convert":
		for i := range int(args[2].bits) {
			f.st(args[0].bits, i, f.ld(args[1].bits, i))
		}
	case "scale":
		for i := range int(args[1].bits) {
			f.st(args[0].bits, i, f.ld(args[0].bits, i)*f32(args[2]))
		}
	}
	return nil
}

// gemm is cublasGemmEx by its definition: column-major matrices, C m×n,
// op(A) m×k, op(B) k×n.
func (f *fakeDevice) gemm(g gemmCall) error {
	load := func(p uintptr, typ, rows, cols, ld int) []float32 { // a column-major rows×cols matrix
		tag := uint64(p)
		if typ == dataBF16 {
			tag |= 1
		}
		out := make([]float32, ld*(cols-1)+rows)
		for i := range out {
			out[i] = f.ld(tag, i)
		}
		return out
	}
	ar, ac := g.m, g.k
	if g.transA {
		ar, ac = g.k, g.m
	}
	br, bc := g.k, g.n
	if g.transB {
		br, bc = g.n, g.k
	}
	a, b := load(g.a, g.typeAB, ar, ac, g.lda), load(g.b, g.typeAB, br, bc, g.ldb)
	c := load(g.c, g.typeC, g.m, g.n, g.ldc)
	ctag := uint64(g.c)
	if g.typeC == dataBF16 {
		ctag |= 1
	}
	for j := range g.n {
		for i := range g.m {
			var s float64
			for l := range g.k {
				ai, bi := i+l*g.lda, l+j*g.ldb
				if g.transA {
					ai = l + i*g.lda
				}
				if g.transB {
					bi = j + l*g.ldb
				}
				av, bv := a[ai], b[bi]
				s += float64(av) * float64(bv)
			}
			old := float32(0)
			if g.beta != 0 {
				old = c[i+j*g.ldc]
			}
			f.st(ctag, i+j*g.ldc, g.alpha*float32(s)+g.beta*old)
		}
	}
	return nil
}

// launched returns the distinct kernel names launched, sorted.
func (f *fakeDevice) launched() []string {
	seen := map[string]bool{}
	for _, l := range f.launches {
		seen[l.name] = true
	}
	var out []string
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
