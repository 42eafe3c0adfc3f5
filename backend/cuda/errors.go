package cuda

import (
	"errors"
	"fmt"
)

// Error is a failed CUDA call: the library function called and the status
// it returned.
type Error struct {
	Call   string // the C function, e.g. cuMemAlloc_v2
	Status int    // its status code
	Name   string // the status's name, e.g. CUDA_ERROR_OUT_OF_MEMORY
	Hint   string // what to do about it, when known
}

func (e *Error) Error() string {
	s := fmt.Sprintf("cuda: %s failed: %s (%d)", e.Call, e.Name, e.Status)
	if e.Hint != "" {
		s += "; " + e.Hint
	}
	return s
}

// ErrOutOfMemory is matched (errors.Is) by every out-of-memory failure.
var ErrOutOfMemory = errors.New("cuda: out of device memory")

// Is makes out-of-memory statuses of the driver and cuBLAS match ErrOutOfMemory.
func (e *Error) Is(target error) bool {
	return target == ErrOutOfMemory && (e.Name == "CUDA_ERROR_OUT_OF_MEMORY" || e.Name == "CUBLAS_STATUS_ALLOC_FAILED")
}

// Driver API statuses (CUresult) that a user can meet, with hints.
var driverStatus = map[int]struct{ name, hint string }{
	1:   {"CUDA_ERROR_INVALID_VALUE", ""},
	2:   {"CUDA_ERROR_OUT_OF_MEMORY", "use a smaller batch or sequence length, activation recomputation, or the offline teacher cache"},
	3:   {"CUDA_ERROR_NOT_INITIALIZED", ""},
	4:   {"CUDA_ERROR_DEINITIALIZED", ""},
	34:  {"CUDA_ERROR_STUB_LIBRARY", "the libcuda.so found is the toolkit's stub; put the driver's library first in LD_LIBRARY_PATH"},
	46:  {"CUDA_ERROR_DEVICE_UNAVAILABLE", "another process holds the GPU in exclusive mode"},
	100: {"CUDA_ERROR_NO_DEVICE", "no CUDA GPU is visible; check nvidia-smi and CUDA_VISIBLE_DEVICES"},
	101: {"CUDA_ERROR_INVALID_DEVICE", "check --gpu and CUDA_VISIBLE_DEVICES"},
	200: {"CUDA_ERROR_INVALID_IMAGE", "delete the kernel cache (see MINITRON_CACHE) and rerun"},
	201: {"CUDA_ERROR_INVALID_CONTEXT", ""},
	209: {"CUDA_ERROR_NO_BINARY_FOR_GPU", "the kernels were compiled for another GPU; delete the kernel cache"},
	218: {"CUDA_ERROR_INVALID_PTX", ""},
	222: {"CUDA_ERROR_UNSUPPORTED_PTX_VERSION", "NVRTC is newer than the driver; update the driver or use an NVRTC that matches it"},
	300: {"CUDA_ERROR_INVALID_SOURCE", ""},
	400: {"CUDA_ERROR_INVALID_HANDLE", ""},
	500: {"CUDA_ERROR_NOT_FOUND", ""},
	600: {"CUDA_ERROR_NOT_READY", ""},
	700: {"CUDA_ERROR_ILLEGAL_ADDRESS", "a kernel read or wrote out of bounds; this is a bug, please report it with the command"},
	701: {"CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", ""},
	702: {"CUDA_ERROR_LAUNCH_TIMEOUT", ""},
	719: {"CUDA_ERROR_LAUNCH_FAILED", ""},
	999: {"CUDA_ERROR_UNKNOWN", ""},
}

// cuBLAS statuses.
var cublasStatus = map[int]struct{ name, hint string }{
	1:  {"CUBLAS_STATUS_NOT_INITIALIZED", ""},
	3:  {"CUBLAS_STATUS_ALLOC_FAILED", "out of device memory"},
	7:  {"CUBLAS_STATUS_INVALID_VALUE", ""},
	8:  {"CUBLAS_STATUS_ARCH_MISMATCH", "bf16 matrix products need a GPU of compute capability 8.0 (Ampere) or newer"},
	11: {"CUBLAS_STATUS_MAPPING_ERROR", ""},
	13: {"CUBLAS_STATUS_EXECUTION_FAILED", ""},
	14: {"CUBLAS_STATUS_INTERNAL_ERROR", ""},
	15: {"CUBLAS_STATUS_NOT_SUPPORTED", ""},
	16: {"CUBLAS_STATUS_LICENSE_ERROR", ""},
}

// NVRTC statuses.
var nvrtcStatus = map[int]struct{ name, hint string }{
	1:  {"NVRTC_ERROR_OUT_OF_MEMORY", ""},
	2:  {"NVRTC_ERROR_PROGRAM_CREATION_FAILURE", ""},
	3:  {"NVRTC_ERROR_INVALID_INPUT", ""},
	4:  {"NVRTC_ERROR_INVALID_PROGRAM", ""},
	5:  {"NVRTC_ERROR_INVALID_OPTION", "NVRTC does not know the GPU architecture; use an NVRTC at least as new as the GPU"},
	6:  {"NVRTC_ERROR_COMPILATION", ""},
	7:  {"NVRTC_ERROR_BUILTIN_OPERATION_FAILURE", ""},
	11: {"NVRTC_ERROR_INTERNAL_ERROR", ""},
}

// statusError turns a status into an error (nil for 0).
func statusError(table map[int]struct{ name, hint string }, call string, status uintptr) error {
	st := int(int32(status))
	if st == 0 {
		return nil
	}
	e := &Error{Call: call, Status: st, Name: fmt.Sprintf("status %d", st)}
	if s, ok := table[st]; ok {
		e.Name, e.Hint = s.name, s.hint
	}
	return e
}
