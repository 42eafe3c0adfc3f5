package cuda

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"sync"
	"time"
	"unsafe"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/kernels"
)

// Options configure Open.
type Options struct {
	// Device is the GPU ordinal (as CUDA_VISIBLE_DEVICES leaves them).
	Device int
	// CacheDir holds compiled kernels; empty means CacheDir().
	CacheDir string
	// Log receives one-line progress messages (kernel compilation); may be nil.
	Log func(string)
}

// Backend is the CUDA backend: float tensors are bfloat16 (or float32 when
// asked for), computation is float32, matrix products run on cuBLAS and
// everything else on the kernels of package kernels. All work is queued on
// one stream; a Backend is not safe for concurrent use.
type Backend struct {
	dev  device
	mem  *allocator
	kern map[string]kernels.Kernel
	inf  deviceInfo

	errWord uintptr // int32 set by kernels that meet an index out of range
	dbl     uintptr // float64 accumulator of SquaredNorm
	uploads map[string]uintptr
	// attnSplit forces the number of key splits of Attention (tests); 0
	// lets attnSplits choose.
	attnSplit int
}

var _ backend.Backend = (*Backend)(nil)

var (
	openMu   sync.Mutex
	openLibs struct {
		drv  *driver
		rtc  *nvrtc
		blas *cublas
		err  error
		done bool
	}
)

// loadLibraries finds and binds the CUDA libraries once per process: the
// driver first, then an NVRTC and a cuBLAS of a CUDA major version the
// driver supports.
func loadLibraries() (*driver, *nvrtc, *cublas, error) {
	openMu.Lock()
	defer openMu.Unlock()
	l := &openLibs
	if !l.done {
		l.done = true
		l.drv, l.rtc, l.blas, l.err = loadLibrariesFrom(osEnv)
	}
	return l.drv, l.rtc, l.blas, l.err
}

func loadLibrariesFrom(e env) (*driver, *nvrtc, *cublas, error) {
	drv, err := openDriver(e)
	if err != nil {
		return nil, nil, nil, err
	}
	ver, err := drv.version()
	if err != nil {
		return nil, nil, nil, err
	}
	rtc, err := openNVRTC(e, ver/1000)
	if err != nil {
		return nil, nil, nil, err
	}
	blas, err := openCuBLAS(e, ver/1000)
	if err != nil {
		return nil, nil, nil, err
	}
	return drv, rtc, blas, nil
}

// Available reports whether the CUDA libraries load and a GPU is visible,
// and if not, why.
func Available() error {
	drv, _, _, err := loadLibraries()
	if err != nil {
		return err
	}
	_, _, err = drv.init(0)
	return err
}

// DeviceCount returns the number of GPUs visible (as CUDA_VISIBLE_DEVICES
// leaves them).
func DeviceCount() (int, error) {
	drv, _, _, err := loadLibraries()
	if err != nil {
		return 0, err
	}
	return drv.start()
}

// Open initializes the GPU, compiles (or loads from the cache) the kernels
// and returns the backend. Close it when done.
func Open(opt Options) (*Backend, error) {
	drv, rtc, blas, err := loadLibraries()
	if err != nil {
		return nil, err
	}
	return open(drv, rtc, blas, opt)
}

// open is Open on bound libraries. Whatever it made before failing is
// released.
func open(drv *driver, rtc compiler, blas *cublas, opt Options) (*Backend, error) {
	logf := func(format string, a ...any) {
		if opt.Log != nil {
			opt.Log(fmt.Sprintf(format, a...))
		}
	}
	devID, info, err := drv.init(opt.Device)
	if err != nil {
		return nil, err
	}
	if info.Major < 8 {
		return nil, fmt.Errorf("cuda: %s has compute capability %d.%d; bfloat16 needs 8.0 (Ampere) or newer", info.Name, info.Major, info.Minor)
	}
	kern, err := kernels.Kernels()
	if err != nil {
		return nil, err
	}
	g := &gpu{drv: drv, blas: blas, dev: devID, inf: info}
	if err := drv.check("cuDevicePrimaryCtxRetain", drv.cuDevicePrimaryCtxRetain.call(uintptr(unsafe.Pointer(&g.ctx)), uintptr(devID))); err != nil {
		return nil, err
	}
	if err := g.setup(rtc, kern, opt.CacheDir, logf); err != nil {
		g.close() // the error that matters is the first
		return nil, err
	}
	b, err := newBackend(g, kern)
	if err != nil {
		g.close()
		return nil, err
	}
	return b, nil
}

// setup creates the stream and the cuBLAS handle in the retained context
// and loads the kernels. What it made before failing is released by close.
func (g *gpu) setup(rtc compiler, kern map[string]kernels.Kernel, cacheDir string, logf func(string, ...any)) error {
	drv, blas, info := g.drv, g.blas, g.inf
	leave, err := g.enter()
	if err != nil {
		return err
	}
	defer leave()
	const streamNonBlocking = 1
	if err := drv.check("cuStreamCreate", drv.cuStreamCreate.call(uintptr(unsafe.Pointer(&g.stream)), streamNonBlocking)); err != nil {
		return err
	}
	if err := blas.check("cublasCreate_v2", blas.create.call(uintptr(unsafe.Pointer(&g.handle)))); err != nil {
		return err
	}
	if err := blas.check("cublasSetStream_v2", blas.setStream.call(g.handle, g.stream)); err != nil {
		return err
	}
	img, err := compileKernels(rtc, info, len(kern), cacheDir, logf)
	if err != nil {
		return err
	}
	if err := drv.check("cuModuleLoadData", drv.cuModuleLoadData.call(uintptr(unsafe.Pointer(&g.module)), uintptr(unsafe.Pointer(&img[0])))); err != nil {
		return err
	}
	g.funcs = map[string]uintptr{}
	for name := range kern {
		var f uintptr
		cname := cstr(name)
		if err := drv.check("cuModuleGetFunction", drv.cuModuleGetFunction.call(uintptr(unsafe.Pointer(&f)), g.module, uintptr(unsafe.Pointer(&cname[0])))); err != nil {
			return fmt.Errorf("%w (kernel %s)", err, name)
		}
		g.funcs[name] = f
		// Above 48 KiB a kernel's dynamic shared memory must be asked for,
		// and static plus dynamic may not exceed the opt-in limit: ask for
		// what the kernel uses (at most the limit; attnCheck refuses the
		// head dimensions that need more), not for the limit itself.
		if need, big := attentionShared[name]; big && info.MaxShared > 48<<10 {
			n := min(need, info.MaxShared)
			if err := drv.check("cuFuncSetAttribute", drv.cuFuncSetAttribute.call(f, funcAttrMaxDynamicShared, uintptr(n))); err != nil {
				return fmt.Errorf("%w (kernel %s, %d bytes of dynamic shared memory)", err, name, n)
			}
		}
	}
	return nil
}

// compiler is what compileKernels needs of NVRTC.
type compiler interface {
	Version() (int, error)
	Identity() string
	Compile(src, name, arch string, extra ...string) (img []byte, log string, err error)
}

// compileKernels returns the image of the n kernels for the GPU, from the
// cache or compiled by NVRTC (falling back to PTX for the driver to finish
// when NVRTC does not know the GPU's architecture).
func compileKernels(rtc compiler, info deviceInfo, n int, dir string, logf func(string, ...any)) ([]byte, error) {
	if dir == "" {
		d, err := CacheDir()
		if err != nil {
			// A machine without a home directory still runs, compiling
			// the kernels at every start.
			logf("%v; the kernels are compiled at every start", err)
		}
		dir = d
	}
	ver, err := rtc.Version()
	if err != nil {
		return nil, err
	}
	src := kernels.Source()
	for _, arch := range []string{info.Arch(), fmt.Sprintf("compute_%d%d", info.Major, info.Minor), "compute_90", "compute_80"} {
		ext := ".cubin"
		if arch[0] == 'c' {
			ext = ".ptx"
		}
		key := cacheKey(kernels.Hash(), arch, info.Driver, ver, rtc.Identity(), compileOptions(arch))
		start := time.Now()
		img, hit, err := cachedCompile(dir, key, ext, func() ([]byte, error) {
			img, _, err := rtc.Compile(src, "minitron.cu", arch)
			return img, err
		})
		if err != nil {
			if e := (*Error)(nil); errors.As(err, &e) && e.Name == "NVRTC_ERROR_INVALID_OPTION" {
				continue // this NVRTC does not know arch; try an older target
			}
			return nil, err
		}
		if !hit {
			logf("cuda: compiled %d kernels for %s in %v (cached in %s)", n, arch, time.Since(start).Round(time.Millisecond), dir)
		}
		if ext == ".ptx" {
			img = append(img, 0) // cuModuleLoadData reads PTX as a C string
		}
		return img, nil
	}
	return nil, fmt.Errorf("cuda: NVRTC %d.%d cannot compile for %s; install a newer CUDA toolkit or NVRTC", ver/1000, ver%1000/10, info.Arch())
}

// newBackend finishes a backend on a device (real or fake).
// On failure it frees what it allocated.
func newBackend(d device, kern map[string]kernels.Kernel) (*Backend, error) {
	b := &Backend{dev: d, mem: newAllocator(d), kern: kern, inf: d.info(), uploads: map[string]uintptr{}}
	var err error
	if b.errWord, err = b.mem.alloc(16); err == nil {
		if b.dbl, err = b.mem.alloc(16); err == nil {
			err = d.memset32(b.errWord, 0, 4)
		}
	}
	if err != nil {
		b.mem.releaseAll()
		return nil, err
	}
	return b, nil
}

// Close waits for queued work, frees every device allocation of the
// backend, destroys its stream and cuBLAS handle, unloads the kernels and
// releases the GPU's primary context. Its tensors must not be used
// afterwards (operations then fail). Closing again does nothing.
func (b *Backend) Close() error {
	if _, done := b.dev.(closedDevice); done {
		return nil
	}
	err := b.dev.sync()
	clear(b.uploads)
	if ferr := b.mem.releaseAll(); err == nil {
		err = ferr
	}
	if cerr := b.dev.close(); err == nil {
		err = cerr
	}
	b.dev = closedDevice{}
	b.mem = newAllocator(b.dev)
	return err
}

// closedDevice is the device of a closed backend: every call fails.
type closedDevice struct{}

var errClosed = errors.New("cuda: the backend is closed")

func (closedDevice) info() deviceInfo                                      { return deviceInfo{} }
func (closedDevice) malloc(int64) (uintptr, error)                         { return 0, errClosed }
func (closedDevice) free(uintptr) error                                    { return errClosed }
func (closedDevice) htod(uintptr, unsafe.Pointer, int64) error             { return errClosed }
func (closedDevice) dtoh(unsafe.Pointer, uintptr, int64) error             { return errClosed }
func (closedDevice) dtod(uintptr, uintptr, int64) error                    { return errClosed }
func (closedDevice) memset32(uintptr, uint32, int64) error                 { return errClosed }
func (closedDevice) launch(string, [3]uint32, [3]uint32, int, []arg) error { return errClosed }
func (closedDevice) gemm(gemmCall) error                                   { return errClosed }
func (closedDevice) sync() error                                           { return errClosed }
func (closedDevice) memInfo() (int64, int64, error)                        { return 0, 0, errClosed }
func (closedDevice) elapsed(func() error) (time.Duration, error)           { return 0, errClosed }
func (closedDevice) close() error                                          { return nil }

// Name describes the GPU.
func (b *Backend) Name() string {
	return fmt.Sprintf("cuda (%s, %s, %.0f GiB)", b.inf.Name, b.inf.Arch(), float64(b.inf.Memory)/(1<<30))
}

// FloatDType is BF16.
func (b *Backend) FloatDType() backend.DType { return backend.BF16 }

// DeviceTime runs f, which queues work on the backend, and returns the
// time the GPU spent on it, measured with events on the stream.
func (b *Backend) DeviceTime(f func() error) (time.Duration, error) { return b.dev.elapsed(f) }

// MemoryStats reports device memory held by tensors now and at most since
// Open, and what the allocator keeps cached for reuse.
func (b *Backend) MemoryStats() (inUse, peak, cached int64) {
	return b.mem.inUse, b.mem.peak, b.mem.cached
}

// Tensor is a device tensor. Float tensors are BF16 or F32; I32 tensors
// keep a host copy of their values (they only ever come from the host),
// against which ops check indices before launching.
type Tensor struct {
	shape []int
	dt    backend.DType
	ptr   uintptr
	base  uintptr // the allocation, for Free; 0 for views
	host  []int32
	b     *Backend
}

// Shape returns the dimensions.
func (t *Tensor) Shape() []int { return t.shape }

// DType returns BF16, F32 or I32.
func (t *Tensor) DType() backend.DType { return t.dt }

// arg passes t to a kernel: bit 0 of the address marks bfloat16 storage.
func (t *Tensor) arg() arg {
	if t.dt == backend.BF16 {
		return argPtr(t.ptr | 1)
	}
	return argPtr(t.ptr)
}

func (t *Tensor) numel() int   { return backend.Numel(t.shape) }
func (t *Tensor) bytes() int64 { return int64(t.numel() * t.dt.Size()) }

// optArg passes a tensor that may be absent (a null pointer).
func optArg(t *Tensor) arg {
	if t == nil {
		return argPtr(0)
	}
	return t.arg()
}

func checkShape(shape []int) error {
	for _, d := range shape {
		if d < 0 {
			return fmt.Errorf("cuda: negative dimension in shape %v", shape)
		}
	}
	return nil
}

func (b *Backend) alloc(dt backend.DType, shape []int) (*Tensor, error) {
	if err := checkShape(shape); err != nil {
		return nil, err
	}
	t := &Tensor{shape: append([]int(nil), shape...), dt: dt, b: b}
	p, err := b.mem.alloc(t.bytes())
	if err != nil {
		return nil, err
	}
	t.ptr, t.base = p, p
	return t, nil
}

// New makes a zero-filled tensor.
func (b *Backend) New(dt backend.DType, shape ...int) (backend.Tensor, error) {
	if dt != backend.F32 && dt != backend.BF16 && dt != backend.I32 {
		return nil, fmt.Errorf("cuda: cannot make a tensor of dtype %v (use BF16, F32 or I32)", dt)
	}
	t, err := b.alloc(dt, shape)
	if err != nil {
		return nil, err
	}
	if dt == backend.I32 {
		t.host = make([]int32, t.numel())
	}
	if err := b.dev.memset32(t.ptr, 0, (t.bytes()+3)/4); err != nil {
		b.Free(t)
		return nil, err
	}
	return t, nil
}

// FromFloat32 uploads data as a bfloat16 tensor.
func (b *Backend) FromFloat32(data []float32, shape ...int) (backend.Tensor, error) {
	if err := checkShape(shape); err != nil {
		return nil, err
	}
	if n := backend.Numel(shape); n != len(data) {
		return nil, fmt.Errorf("cuda: %d values for shape %v (%d elements)", len(data), shape, n)
	}
	t, err := b.alloc(backend.BF16, shape)
	if err != nil {
		return nil, err
	}
	if err := b.Write(t, data); err != nil {
		b.Free(t)
		return nil, err
	}
	return t, nil
}

// FromInt32 uploads an I32 tensor and keeps data as its host copy.
func (b *Backend) FromInt32(data []int32, shape ...int) (backend.Tensor, error) {
	if err := checkShape(shape); err != nil {
		return nil, err
	}
	if n := backend.Numel(shape); n != len(data) {
		return nil, fmt.Errorf("cuda: %d values for shape %v (%d elements)", len(data), shape, n)
	}
	t, err := b.alloc(backend.I32, shape)
	if err != nil {
		return nil, err
	}
	t.host = data
	if len(data) > 0 {
		if err := b.dev.htod(t.ptr, unsafe.Pointer(&data[0]), t.bytes()); err != nil {
			b.Free(t)
			return nil, err
		}
	}
	return t, nil
}

// encode converts host values to a storage type.
func encode(dt backend.DType, data []float32) []byte {
	if dt == backend.F32 {
		out := make([]byte, 4*len(data))
		for i, v := range data {
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
		}
		return out
	}
	out := make([]byte, 2*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint16(out[2*i:], backend.F32ToBF16(v))
	}
	return out
}

func decode(dt backend.DType, raw []byte) []float32 {
	if dt == backend.F32 {
		out := make([]float32, len(raw)/4)
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
		return out
	}
	out := make([]float32, len(raw)/2)
	for i := range out {
		out[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(raw[2*i:])) << 16)
	}
	return out
}

// Write uploads host values into a float tensor.
func (b *Backend) Write(t backend.Tensor, data []float32) error {
	ct, err := b.floatT("Write", "tensor", t)
	if err != nil {
		return err
	}
	if len(data) != ct.numel() {
		return fmt.Errorf("cuda: Write of %d values into a tensor of shape %v", len(data), ct.shape)
	}
	if len(data) == 0 {
		return nil
	}
	raw := encode(ct.dt, data)
	return b.dev.htod(ct.ptr, unsafe.Pointer(&raw[0]), int64(len(raw)))
}

// ToFloat32 downloads a float tensor.
func (b *Backend) ToFloat32(t backend.Tensor) ([]float32, error) {
	ct, err := b.floatT("ToFloat32", "tensor", t)
	if err != nil {
		return nil, err
	}
	raw := make([]byte, ct.bytes())
	if len(raw) > 0 {
		if err := b.dev.dtoh(unsafe.Pointer(&raw[0]), ct.ptr, int64(len(raw))); err != nil {
			return nil, err
		}
	}
	if err := b.checkErrWord(); err != nil {
		return nil, err
	}
	return decode(ct.dt, raw), nil
}

// ToInt32 returns a copy of an I32 tensor's values.
func (b *Backend) ToInt32(t backend.Tensor) ([]int32, error) {
	ct, err := b.intT("ToInt32", t)
	if err != nil {
		return nil, err
	}
	return append([]int32(nil), ct.host...), nil
}

// View shares storage with t from offset on.
func (b *Backend) View(t backend.Tensor, offset int, shape ...int) (backend.Tensor, error) {
	ct, ok := t.(*Tensor)
	if !ok || ct.b != b {
		return nil, fmt.Errorf("cuda: View of a %T, not a tensor of this backend", t)
	}
	if err := checkShape(shape); err != nil {
		return nil, err
	}
	n := backend.Numel(shape)
	if offset < 0 || offset+n > ct.numel() {
		return nil, fmt.Errorf("cuda: view [%d, %d) outside a tensor of %d elements", offset, offset+n, ct.numel())
	}
	v := &Tensor{shape: append([]int(nil), shape...), dt: ct.dt, ptr: ct.ptr + uintptr(offset*ct.dt.Size()), b: b}
	if ct.host != nil {
		v.host = ct.host[offset : offset+n : offset+n]
	}
	return v, nil
}

// Copy copies src into dst, converting between float storages.
func (b *Backend) Copy(dst, src backend.Tensor) error {
	d, ok1 := dst.(*Tensor)
	s, ok2 := src.(*Tensor)
	if !ok1 || !ok2 || d.b != b || s.b != b || (d.dt == backend.I32) != (s.dt == backend.I32) || d.numel() != s.numel() {
		return fmt.Errorf("cuda: Copy %v %v into %v %v", src.DType(), src.Shape(), dst.DType(), dst.Shape())
	}
	if d.dt == s.dt {
		if d.host != nil {
			copy(d.host, s.host)
		}
		return b.dev.dtod(d.ptr, s.ptr, s.bytes())
	}
	n := d.numel()
	return b.launch("convert", b.grid1(n), block1, 0, d.arg(), s.arg(), argI64(n))
}

// Fill sets every element of a float tensor to v.
func (b *Backend) Fill(t backend.Tensor, v float32) error {
	ct, err := b.floatT("Fill", "tensor", t)
	if err != nil {
		return err
	}
	n := ct.numel()
	return b.launch("fill", b.grid1(n), block1, 0, ct.arg(), argI64(n), argF32(v))
}

// Free returns t's storage to the allocator's cache. Freeing a view, or
// a tensor of a closed backend, does nothing.
func (b *Backend) Free(t backend.Tensor) {
	ct, ok := t.(*Tensor)
	if !ok || ct.b != b || ct.base == 0 {
		return
	}
	if _, closed := b.dev.(closedDevice); !closed { // else Close freed it
		b.mem.free(ct.base)
	}
	ct.base, ct.ptr, ct.host = 0, 0, nil
}

// Sync waits for queued work and reports kernel-side index errors.
func (b *Backend) Sync() error {
	if err := b.dev.sync(); err != nil {
		return err
	}
	return b.checkErrWord()
}

// kernel-side error codes (kernels/*.cu report()).
var errCodes = map[int32]string{
	1: "Embedding: a token id was outside the vocabulary",
	2: "GatherRows/ScatterRows: a row index was out of range",
	3: "KLTopK: a teacher token id was outside the vocabulary",
	4: "CrossEntropy: a target was outside the vocabulary",
}

func (b *Backend) checkErrWord() error {
	var w int32
	if err := b.dev.dtoh(unsafe.Pointer(&w), b.errWord, 4); err != nil {
		return err
	}
	// The stream is idle now: no queued kernel reads the uploads.
	if len(b.uploads) > 256 {
		for k, p := range b.uploads {
			b.mem.free(p)
			delete(b.uploads, k)
		}
	}
	if w == 0 {
		return nil
	}
	_ = b.dev.memset32(b.errWord, 0, 1)
	msg, ok := errCodes[w]
	if !ok {
		msg = fmt.Sprintf("kernel error %d", w)
	}
	return fmt.Errorf("cuda: %s (found by a kernel; the inputs were not checked on the host)", msg)
}

// upload returns a device copy of small constant data (RoPE frequencies,
// per-sequence offsets), uploaded once per distinct content. The copies
// are dropped at a synchronization once there are many (see checkErrWord),
// never inside an op, whose earlier uploads must stay valid.
func (b *Backend) upload(data []byte) (uintptr, error) {
	key := string(data)
	if p, ok := b.uploads[key]; ok {
		return p, nil
	}
	p, err := b.mem.alloc(int64(max(len(data), 4)))
	if err != nil {
		return 0, err
	}
	if len(data) > 0 {
		if err := b.dev.htod(p, unsafe.Pointer(unsafe.StringData(key)), int64(len(data))); err != nil {
			b.mem.free(p)
			return 0, err
		}
	}
	b.uploads[key] = p
	return p, nil
}

func int32Bytes(v []int32) []byte {
	out := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(out[4*i:], uint32(x))
	}
	return out
}

func float32Bytes(v []float32) []byte {
	out := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(x))
	}
	return out
}

// Launch geometry.
var block1 = [3]uint32{256, 1, 1}

// grid1 sizes a grid-stride launch over n elements.
func (b *Backend) grid1(n int) [3]uint32 {
	blocks := (n + 255) / 256
	blocks = max(1, min(blocks, 8*max(b.inf.SMs, 1)))
	return [3]uint32{uint32(blocks), 1, 1}
}

// rowBlock sizes a block that loops over a row of d elements.
func rowBlock(d int) [3]uint32 {
	t := (d/4 + 31) / 32 * 32
	return [3]uint32{uint32(min(max(t, 32), 1024)), 1, 1}
}

// launch checks the block size and arguments against the kernel's
// declaration and queues it.
func (b *Backend) launch(name string, grid, block [3]uint32, shared int, args ...arg) error {
	k, ok := b.kern[name]
	if !ok {
		return fmt.Errorf("cuda: no kernel named %s (this is a bug)", name)
	}
	if err := checkLaunch(k, block, args); err != nil {
		return err
	}
	if grid[0] == 0 || grid[1] == 0 || grid[2] == 0 {
		return nil // nothing to do
	}
	if err := b.dev.launch(name, grid, block, shared, args); err != nil {
		return err
	}
	if debugSync {
		if err := b.Sync(); err != nil {
			return fmt.Errorf("%w (after kernel %s)", err, name)
		}
	}
	return nil
}

// debugSync makes every op synchronous when MINITRON_CUDA_SYNC=1, so a
// failing kernel is reported by the op that launched it.
var debugSync = os.Getenv("MINITRON_CUDA_SYNC") == "1"
