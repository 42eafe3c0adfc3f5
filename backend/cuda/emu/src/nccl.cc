// The stand-in NCCL (libnccl.so.2): communicators whose ranks meet in a
// POSIX shared-memory segment named by the unique id, so the ranks may be
// threads of one process (driving the devices of MINITRON_EMU_GPUS) or
// processes on one host, with the same code. A collective stages each
// rank's input in the rank's slot of the segment, meets at a
// process-shared barrier, and every rank computes its output from the
// slots in rank order: results are deterministic and do not depend on how
// the ranks are spread over processes. Buffers larger than a slot go
// through in chunks. Calls complete before they return (the stream is not
// used), as every stand-in call does.
//
// Waits give up after MINITRON_EMU_NCCL_TIMEOUT seconds (default 300) and
// when a rank's process has died or a rank aborted the communicator, so a
// failed test ends instead of hanging.
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "emu.h"

#define API extern "C" __attribute__((visibility("default")))

// From the stand-in driver: a group's calls run on threads of their own,
// with the caller's context current.
extern "C" int cuCtxGetCurrent(void** ctx);
extern "C" int cuCtxSetCurrent(void* ctx);

typedef int ncclResult_t;
enum {
    ncclSuccess = 0,
    ncclUnhandledCudaError = 1,
    ncclSystemError = 2,
    ncclInternalError = 3,
    ncclInvalidArgument = 4,
    ncclInvalidUsage = 5,
    ncclRemoteError = 6,
};
enum { ncclInt8, ncclUint8, ncclInt32, ncclUint32, ncclInt64, ncclUint64, ncclFloat16, ncclFloat32, ncclFloat64, ncclBfloat16, kTypes };
enum { ncclSum, ncclProd, ncclMax, ncclMin, ncclAvg, kOps };

struct ncclUniqueId {
    char internal[128];
};

namespace {

const int kVersion = 22105; // reported as NCCL 2.21.5
const uint64_t kIdMagic = 0x3130434e5445494dull; // "MIETNC01"
const uint64_t kSegMagic = 0x4d4e43434c534547ull;
const uint32_t kCommMagic = 0x4e43434c;
const int kMaxRanks = 1024;
const uint64_t kSlotBytes = 2 << 20; // staging bytes per rank

// The unique id: a random token and the segment's name.
struct Id {
    uint64_t magic;
    uint64_t token;
    int32_t pid;
    char name[64];
};
static_assert(sizeof(Id) <= sizeof(ncclUniqueId), "id too large");

enum Kind { kAllReduce = 1, kReduceScatter, kAllGather, kBroadcast };
const char* kKindName[] = {"", "AllReduce", "ReduceScatter", "AllGather", "Broadcast"};
const char* kTypeName[] = {"int8", "uint8", "int32", "uint32", "int64", "uint64", "float16", "float32", "float64", "bfloat16"};
const char* kOpName[] = {"sum", "prod", "max", "min", "avg"};
const size_t kTypeSize[] = {1, 1, 4, 4, 8, 8, 2, 4, 8, 2};

struct Op {
    int32_t kind, dtype, redop, root;
    uint64_t count;
};

struct RankSlot {
    std::atomic<int32_t> pid;
    std::atomic<uint32_t> arrived; // the barrier generation it last reached, plus 1
    Op op;
};

// The segment: this header, then one slot of kSlotBytes per rank.
struct Header {
    std::atomic<uint64_t> magic; // kSegMagic once the creator has set it up
    int32_t nranks;
    uint64_t slots; // offset of the first slot
    std::atomic<uint32_t> joined;
    std::atomic<uint32_t> aborted;
    std::atomic<uint32_t> bar_count;
    std::atomic<uint32_t> bar_gen;
    char why[512]; // why it was aborted
    RankSlot ranks[1];
};

struct Comm {
    uint32_t magic = kCommMagic;
    Header* h = nullptr;
    size_t len = 0;
    int rank = 0, nranks = 0;
    char* slot(int r) const { return (char*)h + h->slots + (uint64_t)r * kSlotBytes; }
};

thread_local std::string tls_error;
thread_local int tls_group;
thread_local std::vector<std::function<ncclResult_t()>> tls_queue;

__attribute__((format(printf, 2, 3))) ncclResult_t fail(ncclResult_t code, const char* fmt, ...) {
    char buf[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    tls_error = buf;
    fprintf(stderr, "minitron emu: %s\n", buf);
    fflush(stderr);
    return code;
}

double timeout_seconds() {
    if (const char* s = getenv("MINITRON_EMU_NCCL_TIMEOUT"); s && *s) {
        char* end;
        double v = strtod(s, &end);
        if (!*end && v > 0) return v;
    }
    return 300;
}

double now() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

size_t segment_bytes(int nranks) {
    size_t head = offsetof(Header, ranks) + sizeof(RankSlot) * (size_t)nranks;
    head = (head + 4095) & ~(size_t)4095;
    return head + (size_t)nranks * kSlotBytes;
}

void futex_wait(std::atomic<uint32_t>* a, uint32_t v, double seconds) {
    timespec ts;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - ts.tv_sec) * 1e9);
    syscall(SYS_futex, (uint32_t*)a, FUTEX_WAIT, v, &ts, nullptr, 0);
}

void futex_wake(std::atomic<uint32_t>* a) { syscall(SYS_futex, (uint32_t*)a, FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0); }

// dead reports whether process pid has exited (a zombie counts).
bool dead(int pid) {
    if (pid <= 0 || pid == getpid()) return false;
    if (kill(pid, 0) != 0 && errno == ESRCH) return true;
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return false;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return false;
    buf[n] = 0;
    const char* p = strrchr(buf, ')'); // the state follows the command name
    return p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X');
}

// abort_comm marks the communicator aborted (the first reason is kept)
// and wakes every rank waiting in it.
void abort_comm(Header* h, const char* why) {
    uint32_t zero = 0;
    if (h->aborted.compare_exchange_strong(zero, 1)) {
        snprintf(h->why, sizeof h->why, "%s", why);
    }
    // Waiters wake and find the flag (or see it within their next 50 ms
    // poll); the barrier's generation is left alone, so a barrier that
    // completed before the abort still counts as completed.
    futex_wake(&h->bar_gen);
    futex_wake(&h->joined);
}

// health checks, while rank waits in call, whether the communicator was
// aborted or a rank's process died.
ncclResult_t health(Comm* c, const char* call) {
    Header* h = c->h;
    if (h->aborted.load()) return fail(ncclRemoteError, "%s: rank %d: the communicator was aborted: %s", call, c->rank, h->why);
    for (int r = 0; r < c->nranks; r++) {
        int pid = h->ranks[r].pid.load();
        if (dead(pid)) {
            char why[256];
            snprintf(why, sizeof why, "the process of rank %d (pid %d) exited", r, pid);
            abort_comm(h, why);
            return fail(ncclRemoteError, "%s: rank %d: %s", call, c->rank, why);
        }
    }
    return ncclSuccess;
}

// barrier returns when every rank has reached it, or fails when the
// communicator is aborted, a rank's process dies or the time runs out
// (naming the ranks that did not arrive).
ncclResult_t barrier(Comm* c, const char* call) {
    Header* h = c->h;
    if (h->aborted.load()) return health(c, call);
    uint32_t gen = h->bar_gen.load();
    h->ranks[c->rank].arrived.store(gen + 1);
    if (h->bar_count.fetch_add(1) + 1 == (uint32_t)c->nranks) {
        h->bar_count.store(0);
        h->bar_gen.fetch_add(1);
        futex_wake(&h->bar_gen);
        return ncclSuccess;
    }
    double limit = timeout_seconds(), start = now();
    while (h->bar_gen.load() == gen) {
        futex_wait(&h->bar_gen, gen, 0.05);
        if (h->bar_gen.load() != gen) break;
        if (ncclResult_t e = health(c, call)) return e;
        if (now() - start > limit) {
            std::string missing;
            for (int r = 0; r < c->nranks; r++)
                if (h->ranks[r].arrived.load() != gen + 1) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
            char why[512];
            snprintf(why, sizeof why, "%s: rank %d waited %.0f s for rank(s) %s (MINITRON_EMU_NCCL_TIMEOUT)", call, c->rank, limit, missing.c_str());
            abort_comm(h, why);
            return fail(ncclSystemError, "%s", why);
        }
    }
    return ncclSuccess;
}

bool valid(Comm* c) { return c && c->magic == kCommMagic; }

// ---- element types ------------------------------------------------------------

template <typename A>
A combine(A a, A b, int op) {
    switch (op) {
    case ncclProd: return a * b;
    case ncclMax: return b > a ? b : a;
    case ncclMin: return b < a ? b : a;
    }
    return a + b; // sum, avg
}

// reduce_as computes out[i] = in[0][i] op in[1][i] op ... in rank order,
// in the accumulator type A, for elements stored as S.
template <typename S, typename A>
void reduce_as(void* out, char* const* in, uint64_t n, int nranks, int op) {
    for (uint64_t i = 0; i < n; i++) {
        A acc = (A)((const S*)in[0])[i];
        for (int r = 1; r < nranks; r++) acc = combine<A>(acc, (A)((const S*)in[r])[i], op);
        if (op == ncclAvg) acc = acc / (A)nranks;
        ((S*)out)[i] = (S)acc;
    }
}

void reduce_bf16(void* out, char* const* in, uint64_t n, int nranks, int op) {
    for (uint64_t i = 0; i < n; i++) {
        float acc = bf16_to_f32(((const uint16_t*)in[0])[i]);
        for (int r = 1; r < nranks; r++) acc = combine<float>(acc, bf16_to_f32(((const uint16_t*)in[r])[i]), op);
        if (op == ncclAvg) acc /= (float)nranks;
        ((uint16_t*)out)[i] = f32_to_bf16(acc);
    }
}

void reduce(int dtype, void* out, char* const* in, uint64_t n, int nranks, int op) {
    switch (dtype) {
    case ncclInt8: reduce_as<int8_t, int8_t>(out, in, n, nranks, op); break;
    case ncclUint8: reduce_as<uint8_t, uint8_t>(out, in, n, nranks, op); break;
    case ncclInt32: reduce_as<int32_t, int32_t>(out, in, n, nranks, op); break;
    case ncclUint32: reduce_as<uint32_t, uint32_t>(out, in, n, nranks, op); break;
    case ncclInt64: reduce_as<int64_t, int64_t>(out, in, n, nranks, op); break;
    case ncclUint64: reduce_as<uint64_t, uint64_t>(out, in, n, nranks, op); break;
    case ncclFloat32: reduce_as<float, float>(out, in, n, nranks, op); break;
    case ncclFloat64: reduce_as<double, double>(out, in, n, nranks, op); break;
    case ncclBfloat16: reduce_bf16(out, in, n, nranks, op); break;
    }
}

// ---- collectives --------------------------------------------------------------

std::string describe(const Op& o) {
    char buf[160];
    if (o.kind == kBroadcast)
        snprintf(buf, sizeof buf, "%s of %llu %s from rank %d", kKindName[o.kind], (unsigned long long)o.count, kTypeName[o.dtype], o.root);
    else if (o.kind == kAllReduce || o.kind == kReduceScatter)
        snprintf(buf, sizeof buf, "%s (%s) of %llu %s", kKindName[o.kind], kOpName[o.redop], (unsigned long long)o.count, kTypeName[o.dtype]);
    else
        snprintf(buf, sizeof buf, "%s of %llu %s", kKindName[o.kind], (unsigned long long)o.count, kTypeName[o.dtype]);
    return buf;
}

bool same(const Op& a, const Op& b) {
    return a.kind == b.kind && a.dtype == b.dtype && a.count == b.count && (a.kind != kBroadcast || a.root == b.root) &&
           ((a.kind != kAllReduce && a.kind != kReduceScatter) || a.redop == b.redop);
}

ncclResult_t run(Comm* c, const char* call, Op op, const void* send, void* recv) {
    if (!valid(c)) return fail(ncclInvalidArgument, "%s: invalid communicator", call);
    if (op.dtype < 0 || op.dtype >= kTypes) return fail(ncclInvalidArgument, "%s: invalid data type %d", call, op.dtype);
    bool reduces = op.kind == kAllReduce || op.kind == kReduceScatter;
    if (reduces && (op.redop < 0 || op.redop >= kOps)) return fail(ncclInvalidArgument, "%s: invalid reduction %d", call, op.redop);
    if (reduces && op.dtype == ncclFloat16) return fail(ncclInvalidArgument, "%s: the stand-in does not reduce float16", call);
    if (op.kind == kBroadcast && (op.root < 0 || op.root >= c->nranks)) return fail(ncclInvalidArgument, "%s: root %d outside the %d ranks", call, op.root, c->nranks);
    if (int e = emu_context_error()) return fail(ncclUnhandledCudaError, "%s: CUDA error %d in the current context (or none is current)", call, e);
    if (op.count == 0) return ncclSuccess;
    const int n = c->nranks, me = c->rank;
    const size_t es = kTypeSize[op.dtype];
    uint64_t sendn = op.count, recvn = op.count;
    if (op.kind == kReduceScatter) sendn *= n;
    if (op.kind == kAllGather) recvn *= n;
    bool reads = op.kind != kBroadcast || me == op.root;
    if ((reads && !emu_check_range(send, sendn * es, call, "send buffer")) || !emu_check_range(recv, recvn * es, call, "receive buffer")) {
        emu_set_context_error(700); // CUDA_ERROR_ILLEGAL_ADDRESS, as the real kernel's fault would
        char why[200];
        snprintf(why, sizeof why, "%s: rank %d passed a buffer outside device memory", call, me);
        abort_comm(c->h, why);
        return fail(ncclUnhandledCudaError, "%s", why);
    }
    const char* prev = emu_current_op(call);
    struct Restore {
        const char* p;
        ~Restore() { emu_current_op(p); }
    } restore{prev};
    Header* h = c->h;
    h->ranks[me].op = op;
    uint64_t chunk = kSlotBytes / es; // elements per rank per round
    if (op.kind == kReduceScatter) chunk /= n;
    std::vector<char*> in(n);
    for (uint64_t at = 0, first = 1; at < op.count; at += chunk, first = 0) {
        uint64_t m = op.count - at < chunk ? op.count - at : chunk;
        char* mine = c->slot(me);
        switch (op.kind) {
        case kAllReduce:
        case kAllGather: memcpy(mine, (const char*)send + at * es, m * es); break;
        case kReduceScatter:
            for (int j = 0; j < n; j++) memcpy(mine + j * m * es, (const char*)send + (j * op.count + at) * es, m * es);
            break;
        case kBroadcast:
            if (me == op.root) memcpy(mine, (const char*)send + at * es, m * es);
            break;
        }
        if (ncclResult_t e = barrier(c, call)) return e;
        if (first) {
            for (int r = 0; r < n; r++)
                if (!same(h->ranks[r].op, op)) {
                    std::string why = std::string(call) + ": rank " + std::to_string(me) + " called " + describe(op) + " while rank " +
                                      std::to_string(r) + " called " + describe(h->ranks[r].op);
                    abort_comm(h, why.c_str());
                    return fail(ncclInvalidUsage, "%s", why.c_str());
                }
        }
        switch (op.kind) {
        case kAllReduce:
            for (int r = 0; r < n; r++) in[r] = c->slot(r);
            reduce(op.dtype, (char*)recv + at * es, in.data(), m, n, op.redop);
            break;
        case kReduceScatter:
            for (int r = 0; r < n; r++) in[r] = c->slot(r) + me * m * es;
            reduce(op.dtype, (char*)recv + at * es, in.data(), m, n, op.redop);
            break;
        case kAllGather:
            for (int r = 0; r < n; r++) memcpy((char*)recv + (r * op.count + at) * es, c->slot(r), m * es);
            break;
        case kBroadcast: memcpy((char*)recv + at * es, c->slot(op.root), m * es); break;
        }
        if (ncclResult_t e = barrier(c, call)) return e; // the slots are free again
    }
    return ncclSuccess;
}

// enqueue runs f now, or at ncclGroupEnd inside a group (with the
// context current now).
ncclResult_t enqueue(std::function<ncclResult_t()> f) {
    if (tls_group > 0) {
        void* ctx = nullptr;
        cuCtxGetCurrent(&ctx);
        tls_queue.push_back([f, ctx] {
            cuCtxSetCurrent(ctx);
            return f();
        });
        return ncclSuccess;
    }
    return f();
}

// ---- communicators ------------------------------------------------------------

ncclResult_t init_rank(Comm** out, int nranks, Id id, int rank) {
    const char* call = "ncclCommInitRank";
    if (!out) return fail(ncclInvalidArgument, "%s: comm is NULL", call);
    if (id.magic != kIdMagic) return fail(ncclInvalidArgument, "%s: the unique id was not made by this ncclGetUniqueId", call);
    if (nranks < 1 || nranks > kMaxRanks || rank < 0 || rank >= nranks)
        return fail(ncclInvalidArgument, "%s: rank %d of %d ranks (at most %d)", call, rank, nranks, kMaxRanks);
    if (int e = emu_context_error(); e == 3) return fail(ncclUnhandledCudaError, "%s: cuInit was not called", call);
    size_t len = segment_bytes(nranks);
    double limit = timeout_seconds(), start = now();
    int fd = shm_open(id.name, O_RDWR | O_CREAT | O_EXCL, 0600);
    bool creator = fd >= 0;
    if (!creator) {
        for (;;) {
            fd = shm_open(id.name, O_RDWR, 0600);
            struct stat st;
            if (fd >= 0 && fstat(fd, &st) == 0 && (size_t)st.st_size >= len) break;
            if (fd >= 0) close(fd);
            if (now() - start > limit)
                return fail(ncclSystemError, "%s: rank %d: the shared memory %s of the communicator never appeared (%s)", call, rank, id.name, strerror(errno));
            usleep(1000);
        }
    } else if (ftruncate(fd, (off_t)len) != 0) {
        int e = errno;
        close(fd);
        shm_unlink(id.name);
        return fail(ncclSystemError, "%s: sizing shared memory %s to %zu bytes: %s", call, id.name, len, strerror(e));
    }
    void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return fail(ncclSystemError, "%s: mapping shared memory %s: %s", call, id.name, strerror(errno));
    Header* h = (Header*)p;
    if (creator) {
        h->nranks = nranks;
        h->slots = len - (size_t)nranks * kSlotBytes;
        h->magic.store(kSegMagic);
    } else {
        while (h->magic.load() != kSegMagic) {
            if (now() - start > limit) {
                munmap(p, len);
                return fail(ncclSystemError, "%s: rank %d: the communicator's shared memory %s was never set up", call, rank, id.name);
            }
            usleep(1000);
        }
        if (h->nranks != nranks) {
            munmap(p, len);
            return fail(ncclInvalidUsage, "%s: rank %d says there are %d ranks, another said %d", call, rank, nranks, h->nranks);
        }
    }
    int32_t zero = 0;
    if (!h->ranks[rank].pid.compare_exchange_strong(zero, (int32_t)getpid())) {
        munmap(p, len);
        return fail(ncclInvalidUsage, "%s: rank %d joined the communicator twice", call, rank);
    }
    Comm* c = new Comm();
    c->h = h;
    c->len = len;
    c->rank = rank;
    c->nranks = nranks;
    if (h->joined.fetch_add(1) + 1 == (uint32_t)nranks) {
        shm_unlink(id.name); // every rank has it mapped: the name is no longer needed
        futex_wake(&h->joined);
    }
    for (;;) {
        uint32_t j = h->joined.load();
        if (j >= (uint32_t)nranks) break;
        if (ncclResult_t e = health(c, call)) {
            munmap(p, len);
            delete c;
            return e;
        }
        if (now() - start > limit) {
            std::string missing;
            for (int r = 0; r < nranks; r++)
                if (h->ranks[r].pid.load() == 0) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
            char why[512];
            snprintf(why, sizeof why, "%s: rank %d waited %.0f s for rank(s) %s to join (MINITRON_EMU_NCCL_TIMEOUT)", call, rank, limit, missing.c_str());
            abort_comm(h, why);
            shm_unlink(id.name);
            munmap(p, len);
            delete c;
            return fail(ncclSystemError, "%s", why);
        }
        futex_wait(&h->joined, j, 0.05);
    }
    *out = c;
    return ncclSuccess;
}

void release(Comm* c) {
    c->magic = 0;
    munmap(c->h, c->len);
    delete c;
}

} // namespace

typedef Comm* ncclComm_t;

API ncclResult_t ncclGetVersion(int* version) {
    if (!version) return ncclInvalidArgument;
    *version = kVersion;
    return ncclSuccess;
}

API ncclResult_t ncclGetUniqueId(ncclUniqueId* out) {
    if (!out) return fail(ncclInvalidArgument, "ncclGetUniqueId: id is NULL");
    Id id{};
    id.magic = kIdMagic;
    if (getrandom(&id.token, sizeof id.token, 0) != sizeof id.token) id.token = (uint64_t)(now() * 1e9) ^ ((uint64_t)getpid() << 32);
    id.pid = getpid();
    snprintf(id.name, sizeof id.name, "/minitron-nccl-%d-%016llx", id.pid, (unsigned long long)id.token);
    memset(out, 0, sizeof *out);
    memcpy(out, &id, sizeof id);
    return ncclSuccess;
}

API ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId uid, int rank) {
    Id id;
    memcpy(&id, &uid, sizeof id);
    return enqueue([=] { return init_rank(comm, nranks, id, rank); });
}

API ncclResult_t ncclCommDestroy(ncclComm_t comm) {
    if (!valid(comm)) return fail(ncclInvalidArgument, "ncclCommDestroy: invalid communicator");
    release(comm);
    return ncclSuccess;
}

API ncclResult_t ncclCommFinalize(ncclComm_t comm) {
    return valid(comm) ? ncclSuccess : fail(ncclInvalidArgument, "ncclCommFinalize: invalid communicator");
}

// ncclCommAbort may be called while another thread is blocked in a
// collective of comm (that is what it is for): the collective returns an
// error, and the communicator's memory is left mapped for it to do so.
API ncclResult_t ncclCommAbort(ncclComm_t comm) {
    if (!valid(comm)) return fail(ncclInvalidArgument, "ncclCommAbort: invalid communicator");
    char why[64];
    snprintf(why, sizeof why, "rank %d called ncclCommAbort", comm->rank);
    abort_comm(comm->h, why);
    comm->magic = 0;
    return ncclSuccess;
}

API ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* err) {
    if (!valid(comm) || !err) return ncclInvalidArgument;
    *err = comm->h->aborted.load() ? ncclRemoteError : ncclSuccess;
    return ncclSuccess;
}

API ncclResult_t ncclCommCount(const ncclComm_t comm, int* count) {
    if (!valid(comm) || !count) return ncclInvalidArgument;
    *count = comm->nranks;
    return ncclSuccess;
}

API ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank) {
    if (!valid(comm) || !rank) return ncclInvalidArgument;
    *rank = comm->rank;
    return ncclSuccess;
}

API const char* ncclGetErrorString(ncclResult_t r) {
    switch (r) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
    case ncclSystemError: return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
    case ncclInternalError: return "internal error - please report this issue to the NCCL developers";
    case ncclInvalidArgument: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case ncclInvalidUsage: return "invalid usage (run with NCCL_DEBUG=WARN for details)";
    case ncclRemoteError: return "remote process exited or there was a network error";
    }
    return "unknown result code";
}

API const char* ncclGetLastError(ncclComm_t) { return tls_error.c_str(); }

API ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, int dtype, int op, ncclComm_t comm, void*) {
    return enqueue([=] { return run(comm, "ncclAllReduce", Op{kAllReduce, dtype, op, 0, count}, send, recv); });
}

API ncclResult_t ncclReduceScatter(const void* send, void* recv, size_t recvcount, int dtype, int op, ncclComm_t comm, void*) {
    return enqueue([=] { return run(comm, "ncclReduceScatter", Op{kReduceScatter, dtype, op, 0, recvcount}, send, recv); });
}

API ncclResult_t ncclAllGather(const void* send, void* recv, size_t sendcount, int dtype, ncclComm_t comm, void*) {
    return enqueue([=] { return run(comm, "ncclAllGather", Op{kAllGather, dtype, 0, 0, sendcount}, send, recv); });
}

API ncclResult_t ncclBroadcast(const void* send, void* recv, size_t count, int dtype, int root, ncclComm_t comm, void*) {
    return enqueue([=] { return run(comm, "ncclBroadcast", Op{kBroadcast, dtype, 0, root, count}, send, recv); });
}

API ncclResult_t ncclGroupStart() {
    tls_group++;
    return ncclSuccess;
}

// ncclGroupEnd runs the calls queued since the outermost ncclGroupStart,
// each on a thread of its own (they are the ranks of a collective, which
// meet at barriers), and returns the first failure.
API ncclResult_t ncclGroupEnd() {
    if (tls_group <= 0) return fail(ncclInvalidUsage, "ncclGroupEnd without ncclGroupStart");
    if (--tls_group > 0) return ncclSuccess;
    std::vector<std::function<ncclResult_t()>> q;
    q.swap(tls_queue);
    if (q.empty()) return ncclSuccess;
    std::vector<ncclResult_t> res(q.size(), ncclSuccess);
    std::vector<std::thread> ts;
    for (size_t i = 0; i + 1 < q.size(); i++) ts.emplace_back([&, i] { res[i] = q[i](); });
    res.back() = q.back()();
    for (auto& t : ts) t.join();
    for (ncclResult_t r : res)
        if (r != ncclSuccess) return r;
    return ncclSuccess;
}
