"""Triton paged attention: decode (split-K, CUDA-graph safe) and ragged prefill / append.

Both kernels read K/V token by token through the page table (so any page_size works), stop at
each sequence's own kv_len read from device memory, and keep the online softmax in float32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_LOG2E = 1.4426950408889634


@triton.jit
def _paged_decode_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, page_table_ptr, kv_lens_ptr,
    out_ptr, part_acc_ptr, part_max_ptr, part_sum_ptr,
    qk_scale,
    stride_qb, stride_qh, stride_ob, stride_oh,
    stride_cp, stride_cs, stride_ch, stride_pt,
    group, head_dim,
    PAGE_SIZE: tl.constexpr, NUM_SPLITS: tl.constexpr,
    BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # One program per (sequence, kv head, split): the `group` query heads sharing the kv head
    # attend to the split's slice of the sequence's kv_len tokens.
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    kv_len = tl.load(kv_lens_ptr + seq)
    split_len = tl.cdiv(tl.cdiv(kv_len, NUM_SPLITS), BLOCK_N) * BLOCK_N
    start = split * split_len
    end = tl.minimum(start + split_len, kv_len)

    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, BLOCK_D)
    mask_g = offs_g < group
    mask_d = offs_d < head_dim
    heads = kv_head * group + offs_g  # [G] query heads
    q = tl.load(q_ptr + seq * stride_qb + heads[:, None] * stride_qh + offs_d[None, :],
                mask=mask_g[:, None] & mask_d[None, :], other=0.0).to(tl.float32)  # [G, D]

    m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    for n0 in range(start, end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask_n = offs_n < end
        page = tl.load(page_table_ptr + seq * stride_pt + offs_n // PAGE_SIZE,
                       mask=mask_n, other=0).to(tl.int64)
        rows = page * stride_cp + (offs_n % PAGE_SIZE) * stride_cs + kv_head * stride_ch  # [N]
        kv_mask = mask_n[:, None] & mask_d[None, :]
        k = tl.load(k_cache_ptr + rows[:, None] + offs_d[None, :], mask=kv_mask,
                    other=0.0).to(tl.float32)  # [N, D]
        v = tl.load(v_cache_ptr + rows[:, None] + offs_d[None, :], mask=kv_mask,
                    other=0.0).to(tl.float32)
        s = tl.sum(q[:, None, :] * k[None, :, :], axis=2) * qk_scale  # [G, N], log2 units
        s = tl.where(mask_n[None, :], s, float("-inf"))
        # NOTE: every block holds at least one valid key, so m_new is finite.
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.sum(p[:, :, None] * v[None, :, :], axis=1)
        m_i = m_new

    mask_out = mask_g[:, None] & mask_d[None, :]
    if NUM_SPLITS == 1:
        out = acc / l_i[:, None]
        tl.store(out_ptr + seq * stride_ob + heads[:, None] * stride_oh + offs_d[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=mask_out)
    else:
        # Partials [B, Hq, S, D] and [B, Hq, S]; an empty split leaves (-inf, 0, 0).
        part = (seq * tl.num_programs(1) * group + heads) * NUM_SPLITS + split  # [G]
        tl.store(part_acc_ptr + part[:, None] * BLOCK_D + offs_d[None, :], acc, mask=mask_out)
        tl.store(part_max_ptr + part, m_i, mask=mask_g)
        tl.store(part_sum_ptr + part, l_i, mask=mask_g)


@triton.jit
def _paged_decode_reduce_kernel(
    out_ptr, part_acc_ptr, part_max_ptr, part_sum_ptr,
    stride_ob, stride_oh, num_qo_heads, head_dim,
    NUM_SPLITS: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # One program per (sequence, query head): merge the splits' softmax partials.
    seq = tl.program_id(0)
    head = tl.program_id(1)
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    mask_s = offs_s < NUM_SPLITS
    base = (seq * num_qo_heads + head) * NUM_SPLITS
    m = tl.load(part_max_ptr + base + offs_s, mask=mask_s, other=float("-inf"))  # [S]
    total = tl.load(part_sum_ptr + base + offs_s, mask=mask_s, other=0.0)
    acc = tl.load(part_acc_ptr + (base + offs_s)[:, None] * BLOCK_D + offs_d[None, :],
                  mask=mask_s[:, None], other=0.0)  # [S, D]
    m_max = tl.max(m, axis=0)  # finite: split 0 is never empty
    w = tl.exp2(m - m_max)
    out = tl.sum(acc * w[:, None], axis=0) / tl.sum(total * w, axis=0)
    tl.store(out_ptr + seq * stride_ob + head * stride_oh + offs_d,
             out.to(out_ptr.dtype.element_ty), mask=offs_d < head_dim)


@triton.jit
def _paged_prefill_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, qo_indptr_ptr, page_table_ptr, kv_lens_ptr, out_ptr,
    qk_scale,
    stride_qt, stride_qh, stride_ot, stride_oh,
    stride_cp, stride_cs, stride_ch, stride_pt,
    group, head_dim,
    PAGE_SIZE: tl.constexpr, DOT_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # One program per (BLOCK_M query tile, sequence, query head).
    m_block = tl.program_id(0)
    seq = tl.program_id(1)
    head = tl.program_id(2)
    q_start = tl.load(qo_indptr_ptr + seq)
    q_len = tl.load(qo_indptr_ptr + seq + 1) - q_start
    if m_block * BLOCK_M >= q_len:
        return
    kv_len = tl.load(kv_lens_ptr + seq)
    kv_head = head // group

    offs_m = m_block * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < q_len
    mask_d = offs_d < head_dim
    q_rows = (q_start + offs_m).to(tl.int64)
    q = tl.load(q_ptr + q_rows[:, None] * stride_qt + head * stride_qh + offs_d[None, :],
                mask=mask_m[:, None] & mask_d[None, :], other=0.0)  # [M, D]
    if DOT_FP32:
        q = q.to(tl.float32)
    # Query i sits at position kv_len - q_len + i; padding rows (i >= q_len) see every key.
    q_pos = kv_len - q_len + offs_m  # [M]

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    hi = tl.minimum(kv_len, kv_len - q_len + (m_block + 1) * BLOCK_M)
    for n0 in range(0, hi, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask_n = offs_n < kv_len
        page = tl.load(page_table_ptr + seq * stride_pt + offs_n // PAGE_SIZE,
                       mask=mask_n, other=0).to(tl.int64)
        rows = page * stride_cp + (offs_n % PAGE_SIZE) * stride_cs + kv_head * stride_ch  # [N]
        kv_mask = mask_n[:, None] & mask_d[None, :]
        k = tl.load(k_cache_ptr + rows[:, None] + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_cache_ptr + rows[:, None] + offs_d[None, :], mask=kv_mask, other=0.0)
        if DOT_FP32:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
            s = tl.dot(q, tl.trans(k), input_precision="ieee") * qk_scale  # [M, N]
        else:
            s = tl.dot(q, tl.trans(k).to(q.dtype)) * qk_scale
        keep = (offs_n[None, :] <= q_pos[:, None]) & mask_n[None, :]
        s = tl.where(keep, s, float("-inf"))
        # NOTE: key 0 is visible to every row, so after the first block m_i is finite.
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        if DOT_FP32:
            acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new

    out = acc / l_i[:, None]
    tl.store(out_ptr + q_rows[:, None] * stride_ot + head * stride_oh + offs_d[None, :],
             out.to(out_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_d[None, :])


def _check_inputs(q, k_cache, v_cache, page_table, kv_lens) -> tuple[int, int]:
    """Assert the layout the kernels index with; returns (num_kv_heads, group)."""
    assert q.dim() == 3, f"q must be [tokens, Hq, D], got {tuple(q.shape)}"
    num_qo_heads, head_dim = q.shape[1], q.shape[2]
    assert k_cache.dim() == 4 and k_cache.shape == v_cache.shape, (
        f"caches must be [num_pages, page_size, Hk, D], got {tuple(k_cache.shape)}, "
        f"{tuple(v_cache.shape)}"
    )
    assert k_cache.stride() == v_cache.stride(), "k_cache and v_cache must share strides"
    num_kv_heads = k_cache.shape[2]
    assert k_cache.shape[3] == head_dim, f"cache head_dim {k_cache.shape[3]} != q {head_dim}"
    assert num_qo_heads % num_kv_heads == 0, (
        f"Hq={num_qo_heads} is not a multiple of Hk={num_kv_heads}"
    )
    assert q.stride(2) == 1 and k_cache.stride(3) == 1, "head_dim must be contiguous"
    assert page_table.dim() == 2 and page_table.stride(1) == 1, "page_table must be [B, P], rows"
    assert page_table.dtype in (torch.int32, torch.int64), "page_table must be int32/int64"
    assert kv_lens.shape == (page_table.shape[0],) and kv_lens.is_contiguous(), "kv_lens [B]"
    assert kv_lens.dtype in (torch.int32, torch.int64), "kv_lens must be int32/int64"
    assert q.dtype in (torch.float32, torch.float16, torch.bfloat16), f"q dtype {q.dtype}"
    return num_kv_heads, num_qo_heads // num_kv_heads


def _default_num_splits(q: torch.Tensor, num_seqs: int, num_kv_heads: int) -> int:
    """Enough splits to give every SM about two programs; 1 off-GPU. Independent of kv_len."""
    if not q.is_cuda:
        return 1
    sms = torch.cuda.get_device_properties(q.device).multi_processor_count
    return max(1, min(16, triton.cdiv(2 * sms, num_seqs * num_kv_heads)))


def paged_decode_attention_triton(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    page_table: torch.Tensor, kv_lens: torch.Tensor, scale: float,
    max_kv_len: int | None = None, num_splits: int | None = None,
) -> torch.Tensor:
    """Triton version of `paged_decode_attention_ref`: q [B, Hq, D] -> [B, Hq, D].

    The grid is (B, Hk, num_splits) whatever the KV lengths (max_kv_len is accepted and unused),
    so the launch can be captured in a CUDA graph; each program stops at its own kv_len.
    """
    num_kv_heads, group = _check_inputs(q, k_cache, v_cache, page_table, kv_lens)
    num_seqs, num_qo_heads, head_dim = q.shape
    assert kv_lens.shape == (num_seqs,), f"kv_lens {tuple(kv_lens.shape)} != [{num_seqs}]"
    if num_splits is None:
        num_splits = _default_num_splits(q, num_seqs, num_kv_heads)
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    if num_seqs == 0:
        return out
    block_d = triton.next_power_of_2(head_dim)
    part_shape = (num_seqs, num_qo_heads, num_splits) if num_splits > 1 else (1,)
    part_acc = torch.empty((*part_shape, block_d), device=q.device, dtype=torch.float32)
    part_max = torch.empty(part_shape, device=q.device, dtype=torch.float32)
    part_sum = torch.empty(part_shape, device=q.device, dtype=torch.float32)
    _paged_decode_kernel[(num_seqs, num_kv_heads, num_splits)](
        q, k_cache, v_cache, page_table, kv_lens, out, part_acc, part_max, part_sum,
        scale * _LOG2E,
        q.stride(0), q.stride(1), out.stride(0), out.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), page_table.stride(0),
        group, head_dim,
        PAGE_SIZE=k_cache.shape[1], NUM_SPLITS=num_splits,
        BLOCK_G=max(2, triton.next_power_of_2(group)), BLOCK_N=32, BLOCK_D=block_d,
    )
    if num_splits > 1:
        _paged_decode_reduce_kernel[(num_seqs, num_qo_heads)](
            out, part_acc, part_max, part_sum,
            out.stride(0), out.stride(1), num_qo_heads, head_dim,
            NUM_SPLITS=num_splits, BLOCK_S=max(2, triton.next_power_of_2(num_splits)),
            BLOCK_D=block_d,
        )
    return out


def paged_attention_triton(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    qo_indptr: torch.Tensor, page_table: torch.Tensor, kv_lens: torch.Tensor, scale: float,
    max_q_len: int | None = None, max_kv_len: int | None = None,
    block_m: int | None = None, block_n: int | None = None,
) -> torch.Tensor:
    """Triton version of `paged_attention_ref`: ragged causal attention, q [T, Hq, D] -> [T, Hq, D].

    The grid is (ceil(max_q_len / BLOCK_M), B, Hq); without max_q_len it is read from qo_indptr
    (a device sync). max_kv_len is accepted and unused: each program stops at its own kv_len.
    """
    num_kv_heads, group = _check_inputs(q, k_cache, v_cache, page_table, kv_lens)
    num_tokens, num_qo_heads, head_dim = q.shape
    num_seqs = kv_lens.shape[0]
    assert qo_indptr.shape == (num_seqs + 1,) and qo_indptr.is_contiguous(), "qo_indptr [B+1]"
    assert qo_indptr.dtype in (torch.int32, torch.int64), "qo_indptr must be int32/int64"
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    if num_tokens == 0 or num_seqs == 0:
        return out
    if max_q_len is None:
        max_q_len = int((qo_indptr[1:] - qo_indptr[:-1]).max())
    on_gpu = q.is_cuda
    block_m = block_m or (64 if on_gpu else 32)
    block_n = block_n or (64 if on_gpu else 32)
    grid = (triton.cdiv(max(max_q_len, 1), block_m), num_seqs, num_qo_heads)
    _paged_prefill_kernel[grid](
        q, k_cache, v_cache, qo_indptr, page_table, kv_lens, out,
        scale * _LOG2E,
        q.stride(0), q.stride(1), out.stride(0), out.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), page_table.stride(0),
        group, head_dim,
        PAGE_SIZE=k_cache.shape[1],
        # The interpreter computes low-precision tl.dot wrongly; fp32 asks for IEEE dots.
        DOT_FP32=(not on_gpu) or q.dtype == torch.float32,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=max(16, triton.next_power_of_2(head_dim)),
    )
    return out
