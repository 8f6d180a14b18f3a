/* A static-PIE without libc (the cross toolchain's glibc has no rcrt1.o):
   its own _start and system calls, for riscv64 and for the x86-64 native
   reference. Checks the initial stack and auxv of a position-independent
   executable placed by the loader. Uses no data pointers, so it needs no
   relocation. */
#include <elf.h>

#ifdef __riscv
#define SYS_write 64
#define SYS_exit_group 94
static long sys3(long n, long a, long b, long c) {
    register long a0 __asm__("a0") = a, a1 __asm__("a1") = b, a2 __asm__("a2") = c, a7 __asm__("a7") = n;
    __asm__ volatile("ecall" : "+r"(a0) : "r"(a1), "r"(a2), "r"(a7) : "memory");
    return a0;
}
__asm__(".globl _start\n_start:\n mv a0, sp\n call cmain\n");
#else
#define SYS_write 1
#define SYS_exit_group 231
static long sys3(long n, long a, long b, long c) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}
__asm__(".globl _start\n_start:\n mov %rsp, %rdi\n and $-16, %rsp\n call cmain\n hlt\n");
#endif

__attribute__((visibility("hidden"))) void _start(void);

static void put(const char *s) {
    long n = 0;
    while (s[n]) n++;
    sys3(SYS_write, 1, (long)s, n);
}

static void put_flag(const char *name, int v) {
    put(name);
    put(v ? " 1\n" : " 0\n");
}

__attribute__((used)) void cmain(unsigned long *sp) {
    long argc = (long)sp[0];
    char **argv = (char **)(sp + 1);
    char **envp = argv + argc + 1;
    while (*envp) envp++;
    Elf64_auxv_t *aux = (Elf64_auxv_t *)(envp + 1);
    unsigned long entry = 0, phdr = 0, phnum = 0, random = 0, pagesz = 0;
    for (; aux->a_type != AT_NULL; aux++) {
        if (aux->a_type == AT_ENTRY) entry = aux->a_un.a_val;
        if (aux->a_type == AT_PHDR) phdr = aux->a_un.a_val;
        if (aux->a_type == AT_PHNUM) phnum = aux->a_un.a_val;
        if (aux->a_type == AT_RANDOM) random = aux->a_un.a_val;
        if (aux->a_type == AT_PAGESZ) pagesz = aux->a_un.a_val;
    }
    put("static-pie\n");
    put_flag("sp aligned", ((unsigned long)sp & 15) == 0);
    put_flag("argc is 1", argc == 1);
    put_flag("entry is _start", entry == (unsigned long)&_start);
    put_flag("pagesz 4096", pagesz == 4096);
    put_flag("random", random != 0);
    /* The ELF header sits just before the program headers in the first
       PT_LOAD (file offset 0); from it, the load bias. */
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)(phdr - sizeof(Elf64_Ehdr));
    const Elf64_Phdr *ph = (const Elf64_Phdr *)phdr;
    int magic = eh->e_ident[0] == 0x7f && eh->e_ident[1] == 'E' && eh->e_ident[2] == 'L' && eh->e_ident[3] == 'F';
    put_flag("elf header before phdrs", magic && eh->e_phoff == sizeof(Elf64_Ehdr) && eh->e_phnum == phnum);
    unsigned long bias = 0;
    int text_found = 0;
    for (unsigned long i = 0; magic && i < phnum; i++)
        if (ph[i].p_type == PT_LOAD && ph[i].p_offset == 0) bias = (unsigned long)eh - ph[i].p_vaddr;
    for (unsigned long i = 0; magic && i < phnum; i++)
        if (ph[i].p_type == PT_LOAD && (ph[i].p_flags & PF_X) && entry >= bias + ph[i].p_vaddr &&
            entry < bias + ph[i].p_vaddr + ph[i].p_memsz)
            text_found = 1;
    put_flag("e_entry + bias is entry", magic && eh->e_entry + bias == entry);
    put_flag("text segment holds entry", text_found);
    put_flag("loaded away from zero", bias >= 0x10000);
    sys3(SYS_exit_group, 0, 0, 0);
}
