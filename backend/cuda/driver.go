package cuda

import (
	"bytes"
	"fmt"
	"unsafe"
)

// driver binds the CUDA driver API (libcuda). Each method checks the
// status and returns an *Error naming the call.
type driver struct {
	lib *library

	cuInit, cuDriverGetVersion, cuGetErrorName                                proc
	cuDeviceGetCount, cuDeviceGet, cuDeviceGetName, cuDeviceGetAttribute      proc
	cuDeviceTotalMem, cuDevicePrimaryCtxRetain, cuCtxSetCurrent               proc
	cuMemGetInfo, cuMemAlloc, cuMemFree                                       proc
	cuMemcpyHtoDAsync, cuMemcpyDtoHAsync, cuMemcpyDtoDAsync, cuMemsetD32Async proc
	cuStreamCreate, cuStreamSynchronize, cuStreamDestroy                      proc
	cuEventCreate, cuEventRecord, cuEventSynchronize, cuEventElapsedTime      proc
	cuEventDestroy, cuDevicePrimaryCtxRelease, cuMemAllocHost, cuMemFreeHost  proc
	cuModuleLoadData, cuModuleGetFunction, cuFuncSetAttribute, cuLaunchKernel proc
	cuModuleUnload                                                            proc
}

func openDriver(e env) (*driver, error) {
	lib, err := e.openSpec(driverSpec, 0, nil)
	if err != nil {
		return nil, err
	}
	d := &driver{lib: lib}
	err = lib.bind(map[string]*proc{
		"cuInit": &d.cuInit, "cuDriverGetVersion": &d.cuDriverGetVersion, "cuGetErrorName": &d.cuGetErrorName,
		"cuDeviceGetCount": &d.cuDeviceGetCount, "cuDeviceGet": &d.cuDeviceGet, "cuDeviceGetName": &d.cuDeviceGetName,
		"cuDeviceGetAttribute": &d.cuDeviceGetAttribute, "cuDeviceTotalMem_v2": &d.cuDeviceTotalMem,
		"cuDevicePrimaryCtxRetain": &d.cuDevicePrimaryCtxRetain, "cuCtxSetCurrent": &d.cuCtxSetCurrent,
		"cuMemGetInfo_v2": &d.cuMemGetInfo, "cuMemAlloc_v2": &d.cuMemAlloc, "cuMemFree_v2": &d.cuMemFree,
		"cuMemcpyHtoDAsync_v2": &d.cuMemcpyHtoDAsync, "cuMemcpyDtoHAsync_v2": &d.cuMemcpyDtoHAsync,
		"cuMemcpyDtoDAsync_v2": &d.cuMemcpyDtoDAsync, "cuMemsetD32Async": &d.cuMemsetD32Async,
		"cuStreamCreate": &d.cuStreamCreate, "cuStreamSynchronize": &d.cuStreamSynchronize,
		"cuEventCreate": &d.cuEventCreate, "cuEventRecord": &d.cuEventRecord, "cuEventSynchronize": &d.cuEventSynchronize,
		"cuEventDestroy_v2": &d.cuEventDestroy, "cuMemAllocHost_v2": &d.cuMemAllocHost, "cuMemFreeHost": &d.cuMemFreeHost,
		"cuModuleLoadData": &d.cuModuleLoadData, "cuModuleGetFunction": &d.cuModuleGetFunction,
		"cuFuncSetAttribute": &d.cuFuncSetAttribute, "cuLaunchKernel": &d.cuLaunchKernel,
		"cuModuleUnload": &d.cuModuleUnload,
	})
	if err != nil {
		return nil, err
	}
	// Calls whose newer name replaced the old one (CUDA 11 and 12.8 added
	// _v2 versions; later releases may drop the old names).
	for _, b := range []struct {
		p     *proc
		names []string
	}{
		{&d.cuEventElapsedTime, []string{"cuEventElapsedTime_v2", "cuEventElapsedTime"}},
		{&d.cuStreamDestroy, []string{"cuStreamDestroy_v2", "cuStreamDestroy"}},
		{&d.cuDevicePrimaryCtxRelease, []string{"cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease"}},
	} {
		if err := lib.bindFirst(b.p, b.names...); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// version returns the CUDA version the driver supports (major*1000 +
// minor*10), which needs no cuInit and no GPU.
func (d *driver) version() (int, error) {
	var v int32
	if err := d.check("cuDriverGetVersion", d.cuDriverGetVersion.call(uintptr(unsafe.Pointer(&v)))); err != nil {
		return 0, err
	}
	return int(v), nil
}

// check turns a driver status into an error naming call, using the
// driver's own name for statuses the table lacks.
func (d *driver) check(call string, status uintptr) error {
	err := statusError(driverStatus, call, status)
	if e, ok := err.(*Error); ok && e.Name == fmt.Sprintf("status %d", e.Status) && d.cuGetErrorName.addr != 0 {
		var s *byte
		if int32(d.cuGetErrorName.call(uintptr(uint32(e.Status)), uintptr(unsafe.Pointer(&s)))) == 0 && s != nil {
			e.Name = cString(s)
		}
	}
	return err
}

// cString copies a NUL-terminated C string.
func cString(p *byte) string {
	var b []byte
	for q := unsafe.Pointer(p); *(*byte)(q) != 0; q = unsafe.Add(q, 1) {
		b = append(b, *(*byte)(q))
	}
	return string(b)
}

// Device attributes used (CUdevice_attribute).
const (
	attrMultiprocessors      = 16
	attrCCMajor              = 75
	attrCCMinor              = 76
	attrMaxSharedOptin       = 97
	funcAttrMaxDynamicShared = 8
)

// deviceInfo describes the GPU in use.
type deviceInfo struct {
	Ordinal      int
	Name         string
	Major, Minor int   // compute capability
	SMs          int   // multiprocessors
	Memory       int64 // bytes
	MaxShared    int   // opt-in shared memory per block, bytes
	Driver       int   // driver API version, e.g. 13000
}

// Arch returns the compute capability as NVRTC names it ("sm_90").
func (i deviceInfo) Arch() string { return fmt.Sprintf("sm_%d%d", i.Major, i.Minor) }

// start initializes the driver and returns the number of GPUs visible.
func (d *driver) start() (int, error) {
	if err := d.check("cuInit", d.cuInit.call(0)); err != nil {
		return 0, err
	}
	var count int32
	if err := d.check("cuDeviceGetCount", d.cuDeviceGetCount.call(uintptr(unsafe.Pointer(&count)))); err != nil {
		return 0, err
	}
	return int(count), nil
}

// init initializes the driver and describes GPU ordinal.
func (d *driver) init(ordinal int) (dev int32, info deviceInfo, err error) {
	count, err := d.start()
	if err != nil {
		return
	}
	ver, err := d.version()
	if err != nil {
		return
	}
	if ordinal < 0 || ordinal >= count {
		err = fmt.Errorf("cuda: GPU %d requested but %d visible (check CUDA_VISIBLE_DEVICES)", ordinal, count)
		return
	}
	if err = d.check("cuDeviceGet", d.cuDeviceGet.call(uintptr(unsafe.Pointer(&dev)), uintptr(ordinal))); err != nil {
		return
	}
	name := make([]byte, 256)
	if err = d.check("cuDeviceGetName", d.cuDeviceGetName.call(uintptr(unsafe.Pointer(&name[0])), uintptr(len(name)), uintptr(dev))); err != nil {
		return
	}
	if i := bytes.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	info = deviceInfo{Ordinal: ordinal, Name: string(name), Driver: ver}
	for _, a := range []struct {
		attr int
		dst  *int
	}{{attrCCMajor, &info.Major}, {attrCCMinor, &info.Minor}, {attrMultiprocessors, &info.SMs}, {attrMaxSharedOptin, &info.MaxShared}} {
		var v int32
		if err = d.check("cuDeviceGetAttribute", d.cuDeviceGetAttribute.call(uintptr(unsafe.Pointer(&v)), uintptr(a.attr), uintptr(dev))); err != nil {
			return
		}
		*a.dst = int(v)
	}
	var total uint64
	if err = d.check("cuDeviceTotalMem_v2", d.cuDeviceTotalMem.call(uintptr(unsafe.Pointer(&total)), uintptr(dev))); err != nil {
		return
	}
	info.Memory = int64(total)
	return
}
