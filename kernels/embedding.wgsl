// embedding: out[n, :] = table[ids[n], :] and its deterministic backward (a scatter-add without
// atomics). Refs embeddingRef / embeddingBwdRef in src/ops/embedding.ts.
//
// embedding_fwd: one thread per output element (consecutive threads, consecutive columns of one
//   row: coalesced); grid grid1d(ceil(N·C / WG)). An id outside [0, V) yields a zero row (ids are
//   validated on the CPU when the backward index is built; this keeps a bad id from reading
//   another tensor's memory).
// The backward uses a CSR inverse index built on the CPU (buildEmbeddingIndex): for each vocab id v,
//   positions[offsets[v] .. offsets[v+1]] are the rows n with ids[n] = v, in increasing n. Frequent
//   ids (more than a chunk of occurrences) are split into chunks so that no workgroup walks
//   thousands of rows alone: chunks[2j], chunks[2j+1] is a [start, end) range of positions, and the
//   chunks of id v are chunk_offsets[v] .. chunk_offsets[v+1].
// embedding_bwd_chunks: one workgroup per chunk (grid1d(num_chunks)), threads over C; sums its rows
//   of dOut in order into partial[j, :] (f32 scratch).
// embedding_bwd: one workgroup per vocab id (grid1d(V)), threads over C; sums the id's partials in
//   chunk order, or, for an id without chunks, its rows of dOut in order. Writes dTable[v, :]
//   (zeros for an unused id), or adds into it with accumulate = 1 (unused ids are skipped).
// Every sum runs in a fixed order, so the result is bit-identical from run to run.
// Bindings per entry are chosen with #if FWD / BWD_CHUNKS / BWD. Offsets are in elements.
// Numerics: f32 accumulation; storage T.
#include "common.wgsl"

struct Params {
  n: u32,          // fwd: output elements N·C; bwd_chunks: chunks; bwd: vocab rows V
  cols: u32,       // C
  vocab: u32,      // V
  table_off: u32,  // fwd: table; bwd: dTable
  ids_off: u32,
  out_off: u32,    // fwd: out; bwd: dOut
  accumulate: u32, // bwd: 1 = dTable += sums
}

override WG: u32 = 256;

#if FWD
@group(0) @binding(0) var<storage, read> table: array<T>;
@group(0) @binding(1) var<storage, read> ids: array<i32>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;
@group(1) @binding(0) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn embedding_fwd(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = flat_workgroup(wg, nwg) * WG + lid;
  if (i >= params.n) { return; }
  let row = i / params.cols;
  let c = i - row * params.cols;
  let id = ids[params.ids_off + row];
  var v = T(0.0);
  if (id >= 0 && u32(id) < params.vocab) {
    v = table[params.table_off + u32(id) * params.cols + c];
  }
  out[params.out_off + i] = v;
}
#endif

#if BWD_CHUNKS
@group(0) @binding(0) var<storage, read> dout: array<T>;
@group(0) @binding(1) var<storage, read> positions: array<i32>;
@group(0) @binding(2) var<storage, read> chunks: array<i32>;
@group(0) @binding(3) var<storage, read_write> partial: array<f32>;
@group(1) @binding(0) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn embedding_bwd_chunks(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let j = flat_workgroup(wg, nwg);
  if (j >= params.n) { return; }
  let start = u32(chunks[2u * j]);
  let end = u32(chunks[2u * j + 1u]);
  for (var c = lid; c < params.cols; c += WG) {
    var s = 0.0;
    for (var p = start; p < end; p++) {
      s += f32(dout[params.out_off + u32(positions[p]) * params.cols + c]);
    }
    partial[j * params.cols + c] = s;
  }
}
#endif

#if BWD
@group(0) @binding(0) var<storage, read> dout: array<T>;
@group(0) @binding(1) var<storage, read> offsets: array<i32>;
@group(0) @binding(2) var<storage, read> positions: array<i32>;
@group(0) @binding(3) var<storage, read> chunk_offsets: array<i32>;
@group(0) @binding(4) var<storage, read> partial: array<f32>;
@group(0) @binding(5) var<storage, read_write> dtable: array<T>;
@group(1) @binding(0) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn embedding_bwd(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let v = flat_workgroup(wg, nwg);
  if (v >= params.vocab) { return; }
  let first = u32(offsets[v]);
  let last = u32(offsets[v + 1u]);
  if (first == last && params.accumulate != 0u) { return; } // unused id: nothing to add
  let chunk_first = u32(chunk_offsets[v]);
  let chunk_last = u32(chunk_offsets[v + 1u]);
  let row = params.table_off + v * params.cols;
  for (var c = lid; c < params.cols; c += WG) {
    var s = 0.0;
    if (chunk_last > chunk_first) {
      for (var j = chunk_first; j < chunk_last; j++) {
        s += partial[j * params.cols + c];
      }
    } else {
      for (var p = first; p < last; p++) {
        s += f32(dout[params.out_off + u32(positions[p]) * params.cols + c]);
      }
    }
    if (params.accumulate != 0u) {
      s += f32(dtable[row + c]);
    }
    dtable[row + c] = T(s);
  }
}
#endif
