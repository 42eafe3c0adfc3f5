// The stand-in NVRTC (libnvrtc.so): compiles CUDA C kernel sources as host
// C++ with a C++ compiler (clang++ by default), after the prelude that
// supplies CUDA's built-ins, and hands back the shared object, wrapped in a
// small header, as the "CUBIN" (and as the "PTX" for compute_XX targets).
//
// The source is rewritten in two ways: `extern __shared__ T name[];`
// becomes a pointer to the launch's dynamic shared memory, and each
// `extern "C" __global__ void NAME(...)` becomes a static function with an
// exported trampoline __emu_kernel_NAME(void** params) that unpacks the
// parameters by the kernel's own parameter types.
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "abi.h"

extern char** environ;

#define API extern "C" __attribute__((visibility("default")))

// Files embedded by build.sh: the prelude (prelude/*.h in name order) and
// abi.h, which it includes.
struct EmuFile {
    const char* name;
    const char* data;
};
extern "C" const EmuFile emu_files[];

#ifndef EMU_CXX
#define EMU_CXX "clang++"
#endif

typedef int nvrtcResult;
enum {
    NVRTC_SUCCESS = 0,
    NVRTC_ERROR_OUT_OF_MEMORY = 1,
    NVRTC_ERROR_PROGRAM_CREATION_FAILURE = 2,
    NVRTC_ERROR_INVALID_INPUT = 3,
    NVRTC_ERROR_INVALID_PROGRAM = 4,
    NVRTC_ERROR_INVALID_OPTION = 5,
    NVRTC_ERROR_COMPILATION = 6,
    NVRTC_ERROR_BUILTIN_OPERATION_FAILURE = 7,
    NVRTC_ERROR_NO_NAME_EXPRESSIONS_AFTER_COMPILATION = 8,
    NVRTC_ERROR_NO_LOWERED_NAMES_BEFORE_COMPILATION = 9,
    NVRTC_ERROR_NAME_EXPRESSION_NOT_VALID = 10,
    NVRTC_ERROR_INTERNAL_ERROR = 11,
};

namespace {

const uint32_t kProgMagic = 0x50524f47;

struct Program {
    uint32_t magic = kProgMagic;
    std::string src, name;
    std::vector<std::pair<std::string, std::string>> headers; // include name, content
    std::string log;
    std::string image;
    bool compiled = false;
};

const int kArchs[] = {50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 89, 90};

bool valid(Program* p) { return p && p->magic == kProgMagic; }

bool is_ident(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'; }

// depth returns the brace depth at position end of s, skipping comments,
// string and character literals.
int depth(const std::string& s, size_t end) {
    int d = 0;
    for (size_t i = 0; i < end; i++) {
        char c = s[i];
        if (c == '/' && i + 1 < end && s[i + 1] == '/') {
            while (i < end && s[i] != '\n') i++;
        } else if (c == '/' && i + 1 < end && s[i + 1] == '*') {
            size_t e = s.find("*/", i + 2);
            i = e == std::string::npos ? end : e + 1;
        } else if (c == '"' || c == '\'') {
            for (i++; i < end && s[i] != c; i++)
                if (s[i] == '\\') i++;
        } else if (c == '{') {
            d++;
        } else if (c == '}') {
            d--;
        }
    }
    return d;
}

// rewrite_shared turns each `extern __shared__ T name[];` into a pointer to
// the dynamic shared memory: a local variable inside a function, a macro at
// file scope.
std::string rewrite_shared(const std::string& src) {
    std::string out;
    size_t pos = 0;
    for (;;) {
        size_t i = src.find("extern", pos);
        if (i == std::string::npos) break;
        size_t j = i + 6;
        bool word = (i == 0 || !is_ident(src[i - 1])) && j < src.size() && !is_ident(src[j]);
        while (j < src.size() && isspace((unsigned char)src[j])) j++;
        if (!word || src.compare(j, 10, "__shared__") != 0 || (j + 10 < src.size() && is_ident(src[j + 10]))) {
            out.append(src, pos, i + 6 - pos);
            pos = i + 6;
            continue;
        }
        size_t semi = src.find(';', j);
        if (semi == std::string::npos) break;
        std::string decl = src.substr(j + 10, semi - (j + 10)); // "T name[]", maybe with __align__(n)
        size_t a;
        while ((a = decl.find("__align__")) != std::string::npos) {
            size_t close = decl.find(')', a);
            decl.erase(a, close == std::string::npos ? std::string::npos : close + 1 - a);
        }
        size_t br = decl.rfind('[');
        if (br == std::string::npos) { // not an unsized array: leave it to the compiler
            out.append(src, pos, semi + 1 - pos);
            pos = semi + 1;
            continue;
        }
        size_t e = br;
        while (e > 0 && isspace((unsigned char)decl[e - 1])) e--;
        size_t b = e;
        while (b > 0 && is_ident(decl[b - 1])) b--;
        std::string name = decl.substr(b, e - b), type = decl.substr(0, b);
        while (!type.empty() && isspace((unsigned char)type.back())) type.pop_back();
        while (!type.empty() && isspace((unsigned char)type.front())) type.erase(0, 1);
        out.append(src, pos, i - pos);
        if (depth(src, i) > 0)
            out += type + "* const " + name + " = (" + type + "*)__emu_dynsmem();";
        else
            out += "\n#define " + name + " ((" + type + "*)__emu_dynsmem())\n";
        pos = semi + 1;
    }
    out.append(src, pos, std::string::npos);
    return out;
}

// rewrite_kernels makes every extern "C" __global__ function static and
// returns their names.
std::string rewrite_kernels(const std::string& src, std::vector<std::string>* names) {
    std::string out;
    std::set<std::string> seen;
    size_t pos = 0;
    for (;;) {
        size_t i = src.find("extern \"C\"", pos);
        if (i == std::string::npos) break;
        size_t j = i + 10;
        while (j < src.size() && isspace((unsigned char)src[j])) j++;
        if (src.compare(j, 10, "__global__") != 0) {
            out.append(src, pos, j - pos);
            pos = j;
            continue;
        }
        // NAME is the identifier before the first '(' that is not __launch_bounds__'s.
        size_t k = j + 10;
        std::string name;
        for (;;) {
            size_t paren = src.find('(', k);
            if (paren == std::string::npos) break;
            size_t e = paren;
            while (e > k && isspace((unsigned char)src[e - 1])) e--;
            size_t b = e;
            while (b > k && is_ident(src[b - 1])) b--;
            std::string id = src.substr(b, e - b);
            if (id == "__launch_bounds__" || id == "__align__") {
                size_t close = src.find(')', paren);
                if (close == std::string::npos) break;
                k = close + 1;
                continue;
            }
            name = id;
            break;
        }
        out.append(src, pos, i - pos);
        out += "static";
        pos = i + 10;
        if (!name.empty() && seen.insert(name).second) names->push_back(name);
    }
    out.append(src, pos, std::string::npos);
    return out;
}

const char* kTrampolines = R"EMU(
// ---- trampolines (generated by the stand-in NVRTC) ----
template <typename T> struct __emu_kind {
    static constexpr char value = std::is_pointer<T>::value ? 'p' : sizeof(T) == 8 ? '8' : sizeof(T) == 4 ? '4' : sizeof(T) == 2 ? '2' : '1';
};
template <typename... A> struct __emu_sig { static constexpr char s[] = {__emu_kind<A>::value..., 0}; };
template <typename... A> constexpr char __emu_sig<A...>::s[];
template <typename... A> static const char* __emu_sig_of(void (*)(A...)) { return __emu_sig<A...>::s; }
template <typename... A, size_t... I>
static inline void __emu_invoke(void (*f)(A...), void** p, std::index_sequence<I...>) {
    f(*static_cast<typename std::remove_reference<A>::type*>(p[I])...);
}
template <typename... A> static inline void __emu_call(void (*f)(A...), void** p) {
    __emu_invoke(f, p, std::index_sequence_for<A...>{});
}
)EMU";

bool write_file(const std::string& path, const std::string& data) {
    std::ofstream f(path, std::ios::binary);
    f << data;
    return (bool)f;
}

bool read_file(const std::string& path, std::string* out) {
    std::ifstream f(path, std::ios::binary);
    if (!f) return false;
    std::ostringstream ss;
    ss << f.rdbuf();
    *out = ss.str();
    return true;
}

void remove_tree(const std::string& dir, const Program* p) {
    std::vector<std::string> files = {"kernels.cc", "kernels.so", "compile.log"};
    for (const EmuFile* f = emu_files; f->name; f++) files.push_back(f->name);
    for (auto& h : p->headers) files.push_back("include/" + h.first);
    for (auto& f : files) unlink((dir + "/" + f).c_str());
    rmdir((dir + "/prelude").c_str());
    rmdir((dir + "/include").c_str());
    rmdir(dir.c_str());
}

// run runs argv with stdout and stderr into logPath and returns its exit
// status (-1 when it could not start).
int run(const std::vector<std::string>& argv, const std::string& logPath, std::string* err) {
    std::vector<char*> args;
    for (auto& a : argv) args.push_back((char*)a.c_str());
    args.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, logPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid;
    int rc = posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        *err = std::string("cannot run ") + argv[0] + ": " + strerror(rc);
        return -1;
    }
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            *err = std::string("waiting for ") + argv[0] + ": " + strerror(errno);
            return -1;
        }
    }
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    *err = argv[0] + std::string(" was killed by signal ") + std::to_string(WTERMSIG(status));
    return -1;
}

nvrtcResult compile(Program* p, const std::vector<std::string>& opts) {
    std::vector<std::string> defines, includes;
    std::string std_ = "c++17";
    for (size_t i = 0; i < opts.size(); i++) {
        const std::string& o = opts[i];
        auto value = [&](const char* longName, const char* shortName, std::string* v) {
            for (const char* n : {longName, shortName}) {
                if (!n) continue;
                size_t l = strlen(n);
                if (o.compare(0, l, n) == 0 && o.size() > l && o[l] == '=') {
                    *v = o.substr(l + 1);
                    return true;
                }
                if (o == n && i + 1 < opts.size()) {
                    *v = opts[++i];
                    return true;
                }
            }
            return false;
        };
        std::string v;
        if (value("--gpu-architecture", "-arch", &v)) {
            size_t u = v.find('_');
            std::string kind = u == std::string::npos ? "" : v.substr(0, u);
            int num = u == std::string::npos ? 0 : atoi(v.c_str() + u + 1);
            bool known = false;
            for (int a : kArchs) known |= a == num;
            if ((kind != "sm" && kind != "compute") || !known) {
                p->log = "nvrtc: error: invalid value for --gpu-architecture (-arch): " + v + "\n";
                return NVRTC_ERROR_INVALID_OPTION;
            }
        } else if (value("--define-macro", "-D", &v)) {
            defines.push_back(v);
        } else if (o.compare(0, 2, "-D") == 0 && o.size() > 2) {
            defines.push_back(o.substr(2));
        } else if (value("--include-path", "-I", &v)) {
            includes.push_back(v);
        } else if (o.compare(0, 2, "-I") == 0 && o.size() > 2) {
            includes.push_back(o.substr(2));
        } else if (value("--std", "-std", &v)) {
            if (v == "c++17" || v == "c++20") std_ = v; // older standards compile as C++17
        }
        // Every other option (-G, -lineinfo, --use_fast_math, -ftz, ...) is ignored.
    }

    const char* tmp = getenv("TMPDIR");
    std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/minitron-emu-nvrtc-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back(0);
    if (!mkdtemp(buf.data())) {
        p->log = std::string("nvrtc: cannot create a temporary directory: ") + strerror(errno) + "\n";
        return NVRTC_ERROR_BUILTIN_OPERATION_FAILURE;
    }
    std::string dir = buf.data();
    mkdir((dir + "/prelude").c_str(), 0755);
    mkdir((dir + "/include").c_str(), 0755);
    std::string src = "// generated by the minitron stand-in NVRTC\n";
    for (const EmuFile* f = emu_files; f->name; f++) {
        write_file(dir + "/" + f->name, f->data);
        if (strncmp(f->name, "prelude/", 8) == 0) src += std::string("#include \"") + f->name + "\"\n";
    }
    for (auto& h : p->headers) {
        if (h.first.find('/') != std::string::npos || h.first.find("..") != std::string::npos) {
            p->log = "nvrtc: header name " + h.first + " must be a plain file name\n";
            remove_tree(dir, p);
            return NVRTC_ERROR_INVALID_INPUT;
        }
        write_file(dir + "/include/" + h.first, h.second);
    }
    std::vector<std::string> names;
    std::string body = rewrite_kernels(rewrite_shared(p->src), &names);
    src += "#line 1 \"" + p->name + "\"\n" + body + "\n" + kTrampolines;
    for (auto& n : names) {
        src += "EMU_EXPORT void __emu_kernel_" + n + "(void** p) { __emu_call(" + n + ", p); }\n";
        src += "EMU_EXPORT const char* __emu_sig_" + n + "() { return __emu_sig_of(" + n + "); }\n";
    }
    write_file(dir + "/kernels.cc", src);

    const char* cxx = getenv("MINITRON_EMU_CXX");
    std::vector<std::string> argv = {cxx && *cxx ? cxx : EMU_CXX, "-std=" + std_, "-O2", "-fPIC", "-shared",
                                     "-fvisibility=hidden", "-fno-exceptions", "-fstack-clash-protection", "-w",
                                     // A misaligned access faults on a GPU (x86 allows it): trap on it.
                                     "-fsanitize=alignment", "-fsanitize-trap=alignment",
                                     "-I" + dir, "-I" + dir + "/include"};
    for (auto& i : includes) argv.push_back("-I" + i);
    for (auto& d : defines) argv.push_back("-D" + d);
    if (const char* extra = getenv("MINITRON_EMU_CXXFLAGS")) {
        std::istringstream ss(extra);
        std::string f;
        while (ss >> f) argv.push_back(f);
    }
    argv.insert(argv.end(), {"-o", dir + "/kernels.so", dir + "/kernels.cc", "-lm"});
    std::string err;
    int rc = run(argv, dir + "/compile.log", &err);
    std::string log;
    read_file(dir + "/compile.log", &log);
    // Name the source, not the temporary directory, in messages.
    for (size_t at; (at = log.find(dir + "/")) != std::string::npos;) log.erase(at, dir.size() + 1);
    nvrtcResult r = NVRTC_SUCCESS;
    if (rc < 0) {
        p->log = "nvrtc: the stand-in NVRTC needs a C++ compiler to build kernels for the CPU: " + err +
                 " (install clang, or name one in MINITRON_EMU_CXX)\n";
        r = NVRTC_ERROR_BUILTIN_OPERATION_FAILURE;
    } else if (rc != 0) {
        p->log = log;
        r = NVRTC_ERROR_COMPILATION;
    } else {
        std::string so;
        if (!read_file(dir + "/kernels.so", &so)) {
            p->log = "nvrtc: the compiler wrote no shared object\n" + log;
            r = NVRTC_ERROR_BUILTIN_OPERATION_FAILURE;
        } else {
            char hdr[EMU_IMAGE_HEADER] = {0};
            memcpy(hdr, EMU_IMAGE_MAGIC, EMU_IMAGE_MAGIC_LEN);
            uint64_t n = so.size();
            memcpy(hdr + 24, &n, 8);
            p->image = std::string(hdr, sizeof hdr) + so;
            p->log = log;
            p->compiled = true;
        }
    }
    const char* keep = getenv("MINITRON_EMU_KEEP");
    if (keep && *keep == '1')
        fprintf(stderr, "minitron emu: kernel sources kept in %s\n", dir.c_str());
    else
        remove_tree(dir, p);
    return r;
}

} // namespace

API nvrtcResult nvrtcVersion(int* major, int* minor) {
    if (!major || !minor) return NVRTC_ERROR_INVALID_INPUT;
    *major = 12;
    *minor = 8;
    return NVRTC_SUCCESS;
}

API const char* nvrtcGetErrorString(nvrtcResult r) {
    static const char* names[] = {"NVRTC_SUCCESS", "NVRTC_ERROR_OUT_OF_MEMORY", "NVRTC_ERROR_PROGRAM_CREATION_FAILURE",
                                  "NVRTC_ERROR_INVALID_INPUT", "NVRTC_ERROR_INVALID_PROGRAM", "NVRTC_ERROR_INVALID_OPTION",
                                  "NVRTC_ERROR_COMPILATION", "NVRTC_ERROR_BUILTIN_OPERATION_FAILURE",
                                  "NVRTC_ERROR_NO_NAME_EXPRESSIONS_AFTER_COMPILATION",
                                  "NVRTC_ERROR_NO_LOWERED_NAMES_BEFORE_COMPILATION", "NVRTC_ERROR_NAME_EXPRESSION_NOT_VALID",
                                  "NVRTC_ERROR_INTERNAL_ERROR"};
    if (r < 0 || r > 11) return "NVRTC_ERROR unknown";
    return names[r];
}

API nvrtcResult nvrtcGetNumSupportedArchs(int* n) {
    if (!n) return NVRTC_ERROR_INVALID_INPUT;
    *n = (int)(sizeof kArchs / sizeof kArchs[0]);
    return NVRTC_SUCCESS;
}

API nvrtcResult nvrtcGetSupportedArchs(int* out) {
    if (!out) return NVRTC_ERROR_INVALID_INPUT;
    memcpy(out, kArchs, sizeof kArchs);
    return NVRTC_SUCCESS;
}

API nvrtcResult nvrtcCreateProgram(Program** prog, const char* src, const char* name, int numHeaders,
                                   const char* const* headers, const char* const* includeNames) {
    if (!prog) return NVRTC_ERROR_INVALID_PROGRAM;
    if (!src || numHeaders < 0 || (numHeaders > 0 && (!headers || !includeNames))) return NVRTC_ERROR_INVALID_INPUT;
    Program* p = new Program();
    p->src = src;
    p->name = name && *name ? name : "default_program";
    for (int i = 0; i < numHeaders; i++) {
        if (!headers[i] || !includeNames[i]) {
            delete p;
            return NVRTC_ERROR_INVALID_INPUT;
        }
        p->headers.push_back({includeNames[i], headers[i]});
    }
    *prog = p;
    return NVRTC_SUCCESS;
}

API nvrtcResult nvrtcDestroyProgram(Program** prog) {
    if (!prog || !valid(*prog)) return NVRTC_ERROR_INVALID_PROGRAM;
    (*prog)->magic = 0;
    delete *prog;
    *prog = nullptr;
    return NVRTC_SUCCESS;
}

API nvrtcResult nvrtcCompileProgram(Program* p, int numOptions, const char* const* options) {
    if (!valid(p)) return NVRTC_ERROR_INVALID_PROGRAM;
    if (numOptions < 0 || (numOptions > 0 && !options)) return NVRTC_ERROR_INVALID_INPUT;
    std::vector<std::string> opts;
    for (int i = 0; i < numOptions; i++) {
        if (!options[i]) return NVRTC_ERROR_INVALID_INPUT;
        opts.push_back(options[i]);
    }
    p->compiled = false;
    p->image.clear();
    return compile(p, opts);
}

API nvrtcResult nvrtcGetProgramLogSize(Program* p, size_t* n) {
    if (!valid(p)) return NVRTC_ERROR_INVALID_PROGRAM;
    if (!n) return NVRTC_ERROR_INVALID_INPUT;
    *n = p->log.size() + 1;
    return NVRTC_SUCCESS;
}

API nvrtcResult nvrtcGetProgramLog(Program* p, char* out) {
    if (!valid(p)) return NVRTC_ERROR_INVALID_PROGRAM;
    if (!out) return NVRTC_ERROR_INVALID_INPUT;
    memcpy(out, p->log.c_str(), p->log.size() + 1);
    return NVRTC_SUCCESS;
}

static nvrtcResult image_size(Program* p, size_t* n) {
    if (!valid(p)) return NVRTC_ERROR_INVALID_PROGRAM;
    if (!n) return NVRTC_ERROR_INVALID_INPUT;
    if (!p->compiled) return NVRTC_ERROR_INVALID_PROGRAM;
    *n = p->image.size();
    return NVRTC_SUCCESS;
}

static nvrtcResult image(Program* p, char* out) {
    if (!valid(p)) return NVRTC_ERROR_INVALID_PROGRAM;
    if (!out) return NVRTC_ERROR_INVALID_INPUT;
    if (!p->compiled) return NVRTC_ERROR_INVALID_PROGRAM;
    memcpy(out, p->image.data(), p->image.size());
    return NVRTC_SUCCESS;
}

API nvrtcResult nvrtcGetCUBINSize(Program* p, size_t* n) { return image_size(p, n); }
API nvrtcResult nvrtcGetCUBIN(Program* p, char* out) { return image(p, out); }
API nvrtcResult nvrtcGetPTXSize(Program* p, size_t* n) { return image_size(p, n); }
API nvrtcResult nvrtcGetPTX(Program* p, char* out) { return image(p, out); }
