"""gradc's own matrix product for CPUs with AVX-512: c = alpha * op(a) @ op(b) + beta * c.

NumPy's OpenBLAS runs its AVX2 kernels where it does not know the CPU, or where the environment
names an older one (OPENBLAS_CORETYPE=Haswell, which some machines set): on an AVX-512 CPU its
products then run at half the machine's rate (AMD Zen 5, one core: SGEMM 125-131 GFLOP/s, against
216-250 with AVX-512). This product is written for AVX-512 and compiled by LLVM for the CPU at
hand, the first time a program calls it (one precision at a time), so its rate does not depend
on what OpenBLAS was told.

The algorithm is GotoBLAS's, cut down to what gradc's products need (row-major, contiguous rows):
- k is cut into chunks of KC; n into panels of NR columns (two vectors); m into strips of MR rows.
- For each chunk and panel, op(b)'s KC x NR block is copied into a buffer on the stack (packed:
  a transposed b's whole panel in square blocks transposed in registers, its last columns
  gathered; the columns past n are zeros), unless it is a whole panel of an untransposed b,
  which is read where it is.
- A strip's MR x NR block of c is held in 2 * MR vector registers while k runs: per k, two
  vectors of b, MR numbers of op(a) broadcast, 2 * MR fused multiply-adds. The block is then
  scaled by alpha and added to beta * c (beta for the first chunk, 1 after it; c is not read
  where beta is 0, as BLAS's gemm), its columns past n masked off. A panel whose columns fit
  in one vector (n's last ones) is run by strips of one vector.

Each element of c is a sum over k in order (KC at a time, then added to what c holds), so the
bits depend on the shapes alone: a product cut into blocks of rows or columns (rt.product_blocks)
gives the same bits as the product whole.

The IR is written as it should run (SSA values in registers, no allocas but the packed block), so
LLVM's code generator alone compiles it (codegen/native.py). `gradc compile`'s modules copy this
file, so it imports only llvmlite and the standard library.
"""
KC = 256
MR = (12, 4, 1)  # strip heights: strips of 12 rows, the rest in strips of 4 and 1 (with 8 and 2
# too, the float32 product took 60 ms to compile, not 46, and ran as fast within 2%)
# each precision's (LLVM type, lanes per vector, NR: a panel's columns, two vectors), by the
# letter BLAS names it with
TYPES = {"s": ("float", 16, 32), "d": ("double", 8, 16)}
GEMM_SYMBOLS = {"s": "gradc_avx512_sgemm", "d": "gradc_avx512_dgemm"}  # CBLAS's signature


def _vec(p):
    real, lanes, _ = TYPES[p]
    return f"<{lanes} x {real}>"


def _splat(out, p, scalar):
    """Lines setting %<out> to a vector of `scalar` in every lane."""
    real, lanes, _ = TYPES[p]
    vt = _vec(p)
    return [f"  %{out}.1 = insertelement {vt} poison, {real} {scalar}, i64 0",
            f"  %{out} = shufflevector {vt} %{out}.1, {vt} poison, "
            f"<{lanes} x i32> zeroinitializer"]


def _lane_masks(p, valid, vectors=2):
    """Lines setting %mask0 (, %mask1): the lanes of each of a panel's vectors below `valid`
    columns."""
    _, lanes, _ = TYPES[p]
    lines = []
    for v in range(vectors):
        lines += [f"  %left{v} = sub i64 {valid}, {lanes * v}",
                  f"  %atleast{v} = call i64 @llvm.smax.i64(i64 %left{v}, i64 0)",
                  f"  %count{v} = call i64 @llvm.smin.i64(i64 %atleast{v}, i64 {lanes})",
                  f"  %bit{v} = shl i64 1, %count{v}",
                  f"  %bits{v} = sub i64 %bit{v}, 1",
                  f"  %word{v} = trunc i64 %bits{v} to i{lanes}",
                  f"  %mask{v} = bitcast i{lanes} %word{v} to <{lanes} x i1>"]
    return lines


def micro_kernel(p, mr, vectors=2):
    """@<p>strip<mr>x<vectors>(a, a_row, a_k, b, b_row, kc, c, ldc, nv, alpha, beta): c's block
    of mr rows and `vectors` vectors of columns (nv of them valid) at c = alpha * sum over k < kc
    of a[r, k] * b[k, :] + beta * c; a[r, k] at a + r * a_row + k * a_k; b[k, j] at
    b + k * b_row + j. One vector: a panel's last columns where they fit in one (a
    classifier's 10 outputs), at twice the speed of two vectors with one masked off."""
    real, lanes, _ = TYPES[p]
    vt, acc = _vec(p), [(r, v) for r in range(mr) for v in range(vectors)]
    L = [f"define internal void @{p}strip{mr}x{vectors}(ptr noalias %a, i64 %a_row, i64 %a_k, "
         f"ptr noalias %b, i64 %b_row, i64 %kc, ptr noalias %c, i64 %ldc, i64 %nv, {real} %alpha, "
         f"{real} %beta) {{",
         "entry:",
         "  %empty = icmp sle i64 %kc, 0",
         "  br i1 %empty, label %store, label %loop",
         "loop:",
         "  %k = phi i64 [0, %entry], [%k.next, %loop]"]
    L += [f"  %acc{r}.{v} = phi {vt} [zeroinitializer, %entry], [%sum{r}.{v}, %loop]"
          for r, v in acc]
    L += ["  %b.at = mul i64 %k, %b_row"]
    for v in range(vectors):
        L += [f"  %b.at{v} = add i64 %b.at, {lanes * v}",
              f"  %b.ptr{v} = getelementptr {real}, ptr %b, i64 %b.at{v}",
              f"  %b{v} = load {vt}, ptr %b.ptr{v}, align 4"]
    L += ["  %a.k = mul i64 %k, %a_k"]
    for r in range(mr):
        L += [f"  %a.row{r} = mul i64 {r}, %a_row",
              f"  %a.at{r} = add i64 %a.row{r}, %a.k",
              f"  %a.ptr{r} = getelementptr {real}, ptr %a, i64 %a.at{r}",
              f"  %a{r} = load {real}, ptr %a.ptr{r}, align 4"]
        L += _splat(f"a.all{r}", p, f"%a{r}")
        L += [f"  %sum{r}.{v} = call {vt} @llvm.fma.v{lanes}{_bits(p)}({vt} %a.all{r}, "
              f"{vt} %b{v}, {vt} %acc{r}.{v})" for v in range(vectors)]
    L += ["  %k.next = add i64 %k, 1",
          "  %more = icmp slt i64 %k.next, %kc",
          "  br i1 %more, label %loop, label %store",
          "store:"]
    L += [f"  %total{r}.{v} = phi {vt} [zeroinitializer, %entry], [%sum{r}.{v}, %loop]"
          for r, v in acc]
    L += _splat("alphas", p, "%alpha") + _splat("betas", p, "%beta")
    L += [f"  %beta.zero = fcmp oeq {real} %beta, 0.0"] + _lane_masks(p, "%nv", vectors)
    fma, suffix = f"@llvm.fma.v{lanes}{_bits(p)}", f"v{lanes}{_bits(p)}.p0"
    for r, v in acc:
        at = f"{r}.{v}"
        L += [f"  %c.row{at} = mul i64 {r}, %ldc",
              f"  %c.at{at} = add i64 %c.row{at}, {lanes * v}",
              f"  %c.ptr{at} = getelementptr {real}, ptr %c, i64 %c.at{at}",
              f"  %old{at} = call {vt} @llvm.masked.load.{suffix}(ptr %c.ptr{at}, i32 4, "
              f"<{lanes} x i1> %mask{v}, {vt} zeroinitializer)",
              f"  %scaled{at} = fmul {vt} %old{at}, %betas",
              f"  %kept{at} = select i1 %beta.zero, {vt} zeroinitializer, {vt} %scaled{at}",
              f"  %new{at} = call {vt} {fma}({vt} %total{at}, {vt} %alphas, {vt} %kept{at})",
              f"  call void @llvm.masked.store.{suffix}({vt} %new{at}, ptr %c.ptr{at}, i32 4, "
              f"<{lanes} x i1> %mask{v})"]
    return "\n".join(L + ["  ret void", "}"])


def _pack(p, transposed):
    """Lines of the loop `pack.t` / `pack.n` that copies op(b)'s kc x NR block at (k0, j0) into
    %packed, nv columns of it (%mask0, %mask1) and zeros after them; then `br label %strips`."""
    real, lanes, nr = TYPES[p]
    vt, name = _vec(p), "pack.t" if transposed else "pack.n"
    index = ", ".join(f"i64 {i}" for i in range(lanes))
    if transposed:  # a whole panel: square blocks transposed in registers, then the rest
        L = [f"{name}:", f"  br i1 %whole, label %pack.w, label %{name}.tail",
             *_pack_blocks(p),
             f"{name}.tail:",
             f"  %{name}.from = phi i64 [0, %{name}], [%pack.w.end, %pack.w.done]"]
    else:
        L = [f"{name}:", f"  br label %{name}.tail",
             f"{name}.tail:",
             f"  %{name}.from = phi i64 [0, %{name}]"]
    L += [f"  %{name}.empty = icmp sge i64 %{name}.from, %kc",
          f"  br i1 %{name}.empty, label %{name}.done, label %{name}.row",
          f"{name}.row:",
          f"  %{name}.k = phi i64 [%{name}.from, %{name}.tail], [%{name}.k.next, %{name}.row]",
         f"  %{name}.kg = add i64 %k0, %{name}.k",
         f"  %{name}.to = mul i64 %{name}.k, {nr}"]
    for v in range(2):
        at = f"%{name}.{v}"
        if transposed:  # b[j, k] at b + j * ldb + k: a gather of nv rows' element k
            L += [f"  {at}.j = add i64 %j0, {lanes * v}",
                  f"  {at}.j1 = insertelement <{lanes} x i64> poison, i64 {at}.j, i64 0",
                  f"  {at}.js = shufflevector <{lanes} x i64> {at}.j1, <{lanes} x i64> poison, "
                  f"<{lanes} x i32> zeroinitializer",
                  f"  {at}.cols = add <{lanes} x i64> {at}.js, <{index}>",
                  f"  {at}.rows = mul <{lanes} x i64> {at}.cols, %ldbs",
                  f"  {at}.k1 = insertelement <{lanes} x i64> poison, i64 %{name}.kg, i64 0",
                  f"  {at}.ks = shufflevector <{lanes} x i64> {at}.k1, <{lanes} x i64> poison, "
                  f"<{lanes} x i32> zeroinitializer",
                  f"  {at}.at = add <{lanes} x i64> {at}.rows, {at}.ks",
                  f"  {at}.ptrs = getelementptr {real}, ptr %b, <{lanes} x i64> {at}.at",
                  f"  {at}.val = call {vt} @llvm.masked.gather.v{lanes}{_bits(p)}.v{lanes}p0("
                  f"<{lanes} x ptr> {at}.ptrs, i32 4, <{lanes} x i1> %mask{v}, {vt} "
                  "zeroinitializer)"]
        else:  # b[k, j] at b + k * ldb + j: nv consecutive numbers
            L += [f"  {at}.row = mul i64 %{name}.kg, %ldb",
                  f"  {at}.j = add i64 %j0, {lanes * v}",
                  f"  {at}.at = add i64 {at}.row, {at}.j",
                  f"  {at}.ptr = getelementptr {real}, ptr %b, i64 {at}.at",
                  f"  {at}.val = call {vt} @llvm.masked.load.v{lanes}{_bits(p)}.p0(ptr "
                  f"{at}.ptr, i32 4, <{lanes} x i1> %mask{v}, {vt} zeroinitializer)"]
        L += [f"  {at}.to = add i64 %{name}.to, {lanes * v}",
              f"  {at}.dst = getelementptr {real}, ptr %packed, i64 {at}.to",
              f"  store {vt} {at}.val, ptr {at}.dst, align 64"]
    L += [f"  %{name}.k.next = add i64 %{name}.k, 1",
          f"  %{name}.more = icmp slt i64 %{name}.k.next, %kc",
          f"  br i1 %{name}.more, label %{name}.row, label %{name}.done",
          f"{name}.done:",
          "  br label %strips"]
    return L


def _pack_blocks(p):
    """Lines of `pack.w`: a whole panel of a transposed b (b[j, k] at b + j * ldb + k) packed a
    square block of lanes x lanes at a time (one loop over the squares: k's blocks, each of the
    panel's two vectors): a vector per row of b (lanes numbers along k), transposed in registers
    (log2(lanes) rounds, each swapping the off-diagonal quarters of blocks half the size of the
    last's), stored as rows of the panel; %pack.w.end: the k done. A gather a row of the panel
    took twice as long."""
    real, lanes, nr = TYPES[p]
    vt = _vec(p)
    L = ["pack.w:",
         f"  %pack.w.blocks = sdiv i64 %kc, {lanes}",
         f"  %pack.w.end = mul i64 %pack.w.blocks, {lanes}",
         "  %pack.w.squares = mul i64 %pack.w.blocks, 2",
         "  %pack.w.none = icmp eq i64 %pack.w.end, 0",
         "  br i1 %pack.w.none, label %pack.w.done, label %pack.w.square",
         "pack.w.square:",
         "  %w.q = phi i64 [0, %pack.w], [%w.q.next, %pack.w.square]",
         "  %w.v = and i64 %w.q, 1",  # (which vector of the panel)
         "  %w.kb = lshr i64 %w.q, 1",
         f"  %w.k = mul i64 %w.kb, {lanes}",
         "  %w.kg = add i64 %k0, %w.k",
         f"  %w.jv = mul i64 %w.v, {lanes}",
         "  %w.j = add i64 %j0, %w.jv"]
    rows = []
    for r in range(lanes):
        at = f"%w.{r}"
        L += [f"  {at}.j = add i64 %w.j, {r}",
              f"  {at}.row = mul i64 {at}.j, %ldb",
              f"  {at}.at = add i64 {at}.row, %w.kg",
              f"  {at}.ptr = getelementptr {real}, ptr %b, i64 {at}.at",
              f"  {at}.x = load {vt}, ptr {at}.ptr, align 4"]
        rows.append(f"{at}.x")
    half, round_ = lanes // 2, 0
    while half:
        new = list(rows)
        for i in range(lanes):
            if i & half:
                continue
            low = [c if not c & half else lanes + c - half for c in range(lanes)]
            high = [c + half if not c & half else lanes + c for c in range(lanes)]
            for target, mask in ((i, low), (i + half, high)):
                name = f"%w.t{round_}.{target}"
                L.append(f"  {name} = shufflevector {vt} {rows[i]}, {vt} {rows[i + half]}, "
                         f"<{lanes} x i32> <{', '.join(f'i32 {c}' for c in mask)}>")
                new[target] = name
        rows, half, round_ = new, half // 2, round_ + 1
    for t in range(lanes):
        at = f"%w.out{t}"
        L += [f"  {at}.k = add i64 %w.k, {t}",
              f"  {at}.row = mul i64 {at}.k, {nr}",
              f"  {at}.at = add i64 {at}.row, %w.jv",
              f"  {at}.ptr = getelementptr {real}, ptr %packed, i64 {at}.at",
              f"  store {vt} {rows[t]}, ptr {at}.ptr, align 64"]
    return L + ["  %w.q.next = add i64 %w.q, 1",
                "  %w.more = icmp slt i64 %w.q.next, %pack.w.squares",
                "  br i1 %w.more, label %pack.w.square, label %pack.w.done",
                "pack.w.done:",
                "  br label %pack.t.tail"]


def _bits(p):
    return "f32" if p == "s" else "f64"


def gemm(p):
    """@gradc_avx512_<p>gemm: CBLAS's row-major ?gemm (order, transa, transb, m, n, k, alpha,
    a, lda, b, ldb, beta, c, ldc), transa/transb 112 (CblasTrans) or 111."""
    real, lanes, nr = TYPES[p]
    L = [f"define void @{GEMM_SYMBOLS[p]}(i32 %order, i32 %transa, i32 %transb, i64 %m, i64 %n, "
         f"i64 %k, {real} %alpha, ptr noalias %a, i64 %lda, ptr noalias %b, i64 %ldb, {real} "
         f"%beta, ptr noalias %c, i64 %ldc) {{",
         "entry:",
         f"  %packed = alloca {real}, i64 {KC * nr}, align 64",
         "  %ta = icmp eq i32 %transa, 112",
         "  %tb = icmp eq i32 %transb, 112",
         "  %a_row = select i1 %ta, i64 1, i64 %lda",  # op(a)[i, k] at a + i * a_row + k * a_k
         "  %a_k = select i1 %ta, i64 %lda, i64 1",
         f"  %ldb1 = insertelement <{lanes} x i64> poison, i64 %ldb, i64 0",
         f"  %ldbs = shufflevector <{lanes} x i64> %ldb1, <{lanes} x i64> poison, "
         f"<{lanes} x i32> zeroinitializer",
         "  %no.m = icmp sle i64 %m, 0",
         "  %no.n = icmp sle i64 %n, 0",
         "  %nothing = or i1 %no.m, %no.n",
         "  br i1 %nothing, label %done, label %chunk",
         "chunk:",  # k0 = 0, KC, ...: once at least, so that k = 0 gives beta * c
         "  %k0 = phi i64 [0, %entry], [%k0.next, %chunk.next]",
         "  %k.left = sub i64 %k, %k0",
         f"  %kc = call i64 @llvm.smin.i64(i64 %k.left, i64 {KC})",
         "  %first = icmp eq i64 %k0, 0",
         f"  %beta.here = select i1 %first, {real} %beta, {real} 1.0",
         "  br label %panel",
         "panel:",
         "  %j0 = phi i64 [0, %chunk], [%j0.next, %panel.next]",
         "  %n.left = sub i64 %n, %j0",
         f"  %nv = call i64 @llvm.smin.i64(i64 %n.left, i64 {nr})",
         *_lane_masks(p, "%nv"),
         f"  %whole = icmp eq i64 %nv, {nr}",
         "  %tb.no = xor i1 %tb, true",
         "  %in.place = and i1 %whole, %tb.no",
         "  br i1 %in.place, label %direct, label %pack",
         "direct:",  # a whole panel of an untransposed b: read where it is
         "  %d.row = mul i64 %k0, %ldb",
         "  %d.at = add i64 %d.row, %j0",
         f"  %d.ptr = getelementptr {real}, ptr %b, i64 %d.at",
         "  br label %strips",
         "pack:",
         "  br i1 %tb, label %pack.t, label %pack.n",
         *_pack(p, True),
         *_pack(p, False),
         "strips:",
         "  %panel.ptr = phi ptr [%d.ptr, %direct], [%packed, %pack.t.done], "
         "[%packed, %pack.n.done]",
         f"  %panel.row = phi i64 [%ldb, %direct], [{nr}, %pack.t.done], [{nr}, %pack.n.done]",
         "  %a.k0 = mul i64 %k0, %a_k",
         "  br label %strip",
         "strip:",
         "  %i0 = phi i64 [0, %strips], [%i0.next, %strip.next]",
         "  %m.left = sub i64 %m, %i0",
         "  %a.i0 = mul i64 %i0, %a_row",
         "  %a.at = add i64 %a.i0, %a.k0",
         f"  %a.ptr = getelementptr {real}, ptr %a, i64 %a.at",
         "  %c.i0 = mul i64 %i0, %ldc",
         "  %c.at = add i64 %c.i0, %j0",
         f"  %c.ptr = getelementptr {real}, ptr %c, i64 %c.at",
         f"  %narrow = icmp sle i64 %nv, {lanes}",
         f"  br i1 %narrow, label %pick{MR[0]}x1, label %pick{MR[0]}x2"]
    args = (f"ptr %a.ptr, i64 %a_row, i64 %a_k, ptr %panel.ptr, i64 %panel.row, i64 %kc, "
            f"ptr %c.ptr, i64 %ldc, i64 %nv, {real} %alpha, {real} %beta.here")
    runs = []
    for vectors in (1, 2):
        for mr, smaller in zip(MR, MR[1:] + (None,)):  # the tallest strip the rows left allow
            strip = f"{mr}x{vectors}"
            L += [f"pick{strip}:"]
            if smaller is not None:
                L += [f"  %fits{strip} = icmp sge i64 %m.left, {mr}",
                      f"  br i1 %fits{strip}, label %run{strip}, label %pick{smaller}x{vectors}"]
            else:
                L += [f"  br label %run{strip}"]
            L += [f"run{strip}:", f"  call void @{p}strip{strip}({args})",
                  "  br label %strip.next"]
            runs.append(f"[{mr}, %run{strip}]")
    L += ["strip.next:",
          "  %mr = phi i64 " + ", ".join(runs),
          "  %i0.next = add i64 %i0, %mr",
          "  %rows.more = icmp slt i64 %i0.next, %m",
          "  br i1 %rows.more, label %strip, label %panel.next",
          "panel.next:",
          f"  %j0.next = add i64 %j0, {nr}",
          "  %cols.more = icmp slt i64 %j0.next, %n",
          "  br i1 %cols.more, label %panel, label %chunk.next",
          "chunk.next:",
          f"  %k0.next = add i64 %k0, {KC}",
          "  %k.more = icmp slt i64 %k0.next, %k",
          "  br i1 %k.more, label %chunk, label %done",
          "done:",
          "  ret void",
          "}"]
    return "\n".join(L)


def module_ir(precisions="sd"):
    """The LLVM IR of the products of `precisions` ("s": float32, "d": float64) and the strips
    they call."""
    decls = ["declare i64 @llvm.smin.i64(i64, i64)", "declare i64 @llvm.smax.i64(i64, i64)"]
    for p in precisions:
        _, lanes, _ = TYPES[p]
        vt, t = _vec(p), f"v{lanes}{_bits(p)}"
        decls += [f"declare {vt} @llvm.fma.{t}({vt}, {vt}, {vt})",
                  f"declare {vt} @llvm.masked.load.{t}.p0(ptr, i32, <{lanes} x i1>, {vt})",
                  f"declare void @llvm.masked.store.{t}.p0({vt}, ptr, i32, <{lanes} x i1>)",
                  f"declare {vt} @llvm.masked.gather.{t}.v{lanes}p0(<{lanes} x ptr>, i32, "
                  f"<{lanes} x i1>, {vt})"]
    parts = ["\n".join(decls)]
    for p in precisions:
        parts += [micro_kernel(p, mr, vectors) for vectors in (1, 2) for mr in MR] + [gemm(p)]
    return "\n\n".join(parts) + "\n"


def usable(features):
    """Whether the CPU (llvmlite's host feature string, '+avx512f,...') runs these products."""
    return "+avx512f" in features.split(",")


def precisions_called(text):
    """The precisions ("s", "d") whose product kernel source `text` calls (rt.py's sgemm,
    sgemm_add, sgemm_scaled; dgemm...)."""
    return "".join(p for p in TYPES if f"{p}gemm" in text)


def uncached_engine(precisions="sd", cpu=None, features=None):
    """An LLVM execution engine holding module_ir(precisions) compiled for this CPU, or for
    `cpu` with `features` (~45 ms a precision: LLVM's code generator alone, at its highest
    level; the IR needs no passes). gradc itself keeps the machine code in its disk cache
    (codegen/native.py); `gradc compile`'s modules call this."""
    from llvmlite import binding as ll
    ll.initialize_native_target()
    ll.initialize_native_asmprinter()
    machine = ll.Target.from_default_triple().create_target_machine(
        cpu=cpu or ll.get_host_cpu_name(),
        features=ll.get_host_cpu_features().flatten() if features is None else features,
        opt=3, codemodel="jitdefault")
    engine = ll.create_mcjit_compiler(ll.parse_assembly(""), machine)
    engine.add_object_file(ll.ObjectFileRef.from_data(
        machine.emit_object(ll.parse_assembly(module_ir(precisions)))))
    engine.finalize_object()
    return engine


STATS = {"compiled": 0, "loaded": 0}  # (gradc's disk cache: codegen/native.py)
_bound = {}  # precision: the engine whose product its symbol names (kept while the process runs)


def bind_products(engine, precisions="sd"):
    """Give the JIT the products of `precisions` in `engine` (machine code of
    module_ir(precisions)) by their symbols: kernels that call them link against these
    addresses. Compiled only when a program first calls them: a model without products, or
    without float64 ones, compiles none (~45 ms each)."""
    from llvmlite import binding as ll
    for p in precisions:
        if p not in _bound:
            ll.add_symbol(GEMM_SYMBOLS[p], engine.get_function_address(GEMM_SYMBOLS[p]))
            _bound[p] = engine


def address(p):
    """The address of the product of precision p, 0 while it is not bound."""
    return _bound[p].get_function_address(GEMM_SYMBOLS[p]) if p in _bound else 0
