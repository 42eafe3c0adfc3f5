package cuda

import (
	"unsafe"
)

// cublas binds the parts of cuBLAS the backend uses: a handle on our
// stream and GemmEx.
type cublas struct {
	lib *library

	create, destroy, setStream, gemmEx proc
	getProperty                        proc // optional
}

// openCuBLAS finds and binds cuBLAS. With maxMajor > 0 (the driver's CUDA
// major version) a cuBLAS of a newer CUDA is skipped.
func openCuBLAS(e env, maxMajor int) (*cublas, error) {
	lib, err := e.openSpec(cublasSpec, maxMajor, func(l *library) int { return (&cublas{lib: l}).version() })
	if err != nil {
		return nil, err
	}
	c := &cublas{lib: lib}
	return c, lib.bind(map[string]*proc{
		"cublasCreate_v2": &c.create, "cublasDestroy_v2": &c.destroy, "cublasSetStream_v2": &c.setStream,
		"cublasGemmEx": &c.gemmEx,
	})
}

// version returns cuBLAS's version as major*1000 + minor*10 (its major
// version is the CUDA major version), or 0 when it cannot tell.
func (c *cublas) version() int {
	if c.getProperty.addr == 0 && c.lib.bindFirst(&c.getProperty, "cublasGetProperty") != nil {
		return 0
	}
	var major, minor int32
	const majorVersion, minorVersion = 0, 1 // libraryPropertyType
	if int32(c.getProperty.call(majorVersion, uintptr(unsafe.Pointer(&major)))) != 0 ||
		int32(c.getProperty.call(minorVersion, uintptr(unsafe.Pointer(&minor)))) != 0 {
		return 0
	}
	return int(major)*1000 + int(minor)*10
}

func (c *cublas) check(call string, status uintptr) error {
	return statusError(cublasStatus, call, status)
}

// cuBLAS enumerations.
const (
	opN         = 0
	opT         = 1
	dataF32     = 0  // CUDA_R_32F
	dataBF16    = 14 // CUDA_R_16BF
	compute32F  = 68 // CUBLAS_COMPUTE_32F
	gemmDefault = -1 // CUBLAS_GEMM_DEFAULT
)

// gemmCall is one column-major cublasGemmEx call:
// C = alpha·op(A)·op(B) + beta·C, C m×n with leading dimension ldc.
type gemmCall struct {
	transA, transB bool
	m, n, k        int
	alpha, beta    float32
	a, b, c        uintptr // device addresses
	lda, ldb, ldc  int
	typeAB, typeC  int // cudaDataType
}

// rowMajorGemm maps the row-major product c[M,N] = op(x)·op(y) (x
// [M,K] or, transposed, [K,M]; y [K,N] or [N,K]) onto column-major
// cuBLAS: a row-major matrix is its transpose in column-major order, so
// cᵀ = op(y)ᵀ·op(x)ᵀ is computed with the operands swapped.
func rowMajorGemm(M, N, K int, transX, transY bool, x, y, c uintptr, alpha, beta float32, typeAB, typeC int) gemmCall {
	g := gemmCall{transA: transY, transB: transX, m: N, n: M, k: K, alpha: alpha, beta: beta,
		a: y, b: x, c: c, ldc: N, typeAB: typeAB, typeC: typeC}
	g.lda = N // y stored [K,N] row-major is N×K column-major
	if transY {
		g.lda = K // y stored [N,K]
	}
	g.ldb = K // x stored [M,K]
	if transX {
		g.ldb = M // x stored [K,M]
	}
	return g
}

func (c *cublas) gemm(handle uintptr, g gemmCall) error {
	op := func(t bool) uintptr {
		if t {
			return opT
		}
		return opN
	}
	alpha, beta := g.alpha, g.beta
	algo := gemmDefault
	status := c.gemmEx.call(handle, op(g.transA), op(g.transB), uintptr(g.m), uintptr(g.n), uintptr(g.k),
		uintptr(unsafe.Pointer(&alpha)), g.a, uintptr(g.typeAB), uintptr(g.lda), g.b, uintptr(g.typeAB), uintptr(g.ldb),
		uintptr(unsafe.Pointer(&beta)), g.c, uintptr(g.typeC), uintptr(g.ldc), compute32F, uintptr(algo))
	return c.check("cublasGemmEx", status)
}
