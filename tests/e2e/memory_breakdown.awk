# memory_breakdown.awk — checks the start-up memory breakdown lunar logs (lua/lunar/runner.lua)
# from its stderr, independently of the code that printed it: every row is there, KV tokens x
# bytes per token = KV GiB, tokens = blocks x block size, concurrency = tokens / max_model_len,
# and on a GPU the rows sum to the "total" row and to at most total x utilization (each row is
# rounded to 0.01 GiB, hence the slack). With -v kv_bytes=B (--kv-cache-memory-bytes) the KV
# cache is at most B and within one block of it. Used by tests/e2e/memory.sh (cpu) and
# tests/gpu/run_backend.sh. Prints "memory breakdown ok: ..." or FAIL lines; exit 1 on failure.
function num(s) { gsub(/,/, "", s); return s + 0 }
function gib_before(line,   m) { return match(line, /[0-9]+\.[0-9]+ GiB/) ? substr(line, RSTART, RLENGTH - 4) + 0 : -1 }
function bad(msg) { print "FAIL: memory breakdown: " msg; fails++ }
/\[memory\]/ {
  line = $0; sub(/.*\[memory\] /, "", line)
  if (line ~ /gpu_memory_utilization .* for lunar:/) {
    match(line, /= [0-9.]+ GiB for lunar/); limit = substr(line, RSTART + 2, RLENGTH - 16) + 0; device = 1
  } else if (line ~ /^memory on GPU/) { device = 1; limit = -1 }
  else if (line ~ /^  weights /) { w = gib_before(line); seen["weights"] = 1 }
  else if (line ~ /^  activation peak /) { a = gib_before(line); seen["activation peak"] = 1 }
  else if (line ~ /^  CUDA graphs /) { g = gib_before(line); seen["CUDA graphs"] = 1 }
  else if (line ~ /^  other /) { o = line ~ /not measured/ ? 0 : gib_before(line); seen["other"] = 1 }
  else if (line ~ /^  KV cache /) {
    kv = gib_before(line); seen["KV cache"] = 1
    match(line, /= [0-9,]+ tokens/); tokens = num(substr(line, RSTART + 2, RLENGTH - 9))
    match(line, /x [0-9,]+ bytes per token/); per = num(substr(line, RSTART + 2, RLENGTH - 18))
    match(line, /\([0-9,]+ blocks of [0-9]+\)/); split(substr(line, RSTART + 1, RLENGTH - 2), bb, " blocks of ")
    blocks = num(bb[1]); bs = bb[2] + 0
  } else if (line ~ /^  maximum concurrency for /) {
    match(line, /for [0-9]+ tokens/); mml = substr(line, RSTART + 4, RLENGTH - 11) + 0
    match(line, /: [0-9.]+x$/); conc = substr(line, RSTART + 2, RLENGTH - 3) + 0; seen["maximum concurrency"] = 1
  } else if (line ~ /^  total /) { total_row = gib_before(line) }
}
END {
  n = split("weights,activation peak,CUDA graphs,other,KV cache,maximum concurrency", need, ",")
  for (i = 1; i <= n; i++) if (!seen[need[i]]) bad("no '" need[i] "' row")
  if (fails) exit 1
  if (tokens != blocks * bs) bad(tokens " tokens != " blocks " blocks x " bs)
  if ((tokens * per / 1073741824 - kv) ^ 2 > 0.005 ^ 2) bad(tokens " tokens x " per " B = " tokens * per / 1073741824 " GiB, row says " kv)
  if ((tokens / mml - conc) ^ 2 > 0.005 ^ 2) bad("concurrency " conc " != " tokens " / " mml)
  if (kv_bytes != "" && (tokens * per > kv_bytes || tokens * per <= kv_bytes - per * bs))
    bad("KV " tokens * per " B is not the whole blocks of --kv-cache-memory-bytes " kv_bytes)
  sum = w + a + g + o + kv
  if (device) {
    if ((sum - total_row) ^ 2 > 0.03 ^ 2) bad("rows sum to " sum " GiB, total row says " total_row)
    if (limit >= 0 && sum > limit + 0.03) bad("rows sum to " sum " GiB, more than total x utilization " limit)
  }
  if (fails) exit 1
  fmt = "memory breakdown ok: weights %.2f + activations %.2f + graphs %.2f + other %.2f + KV %.2f = %.2f GiB%s; "
  fmt = fmt "KV %d tokens x %d B; %.2fx at %d tokens\n"
  printf fmt, w, a, g, o, kv, sum, (limit > 0 ? sprintf(" <= %.2f", limit) : ""), tokens, per, conc, mml
}
