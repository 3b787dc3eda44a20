;; The hidden-state codecs' hot loops in WebAssembly SIMD, four floats per instruction
;; where JavaScript did one: the escalation path turns, quantizes, dequantizes and turns
;; back a 2048-value token on every escalated token.
;;
;; Compiled by generate-codec-wasm.mjs into generated/codec-kernels.ts; do not edit the
;; generated file, edit this one and rerun the generator. codec-kernels.ts owns the
;; memory and lays it out per call; pointers are byte offsets, 16-byte aligned.
;;
;; ── The randomized Hadamard rotation (hadamard-rotation.ts) ─────────────────────────
;; A block of b values is transformed in place by the fast Walsh–Hadamard transform,
;; stages h = 1, 2, 4, …, b/2 (they commute; any order gives the same matrix):
;;   - h = 1 and h = 2 within one vector of four (lane shuffles), fused with the pass that
;;     multiplies by the signs;
;;   - h ≥ 4 as butterflies between whole vectors h floats apart.
;; Blocks are consecutive and a token is a whole number of blocks, so the stages run over
;; all tokens at once. Blocks of 1 and 2 (a hidden size not divisible by 4) run scalar.
(module
  (memory (export "memory") 1)

  ;; v = H₄ · v for the four lanes [a b c d]: [a+b+c+d, a−b+c−d, a+b−c−d, a−b−c+d].
  (func $wht4 (param $v v128) (result v128)
    (local $x v128)
    ;; [a a c c] + [b b d d] · [1 −1 1 −1] = [a+b, a−b, c+d, c−d]
    (local.set $x
      (f32x4.add
        (i8x16.shuffle 0 1 2 3 0 1 2 3 8 9 10 11 8 9 10 11 (local.get $v) (local.get $v))
        (f32x4.mul
          (i8x16.shuffle 4 5 6 7 4 5 6 7 12 13 14 15 12 13 14 15 (local.get $v) (local.get $v))
          (v128.const f32x4 1 -1 1 -1))))
    ;; [x0 x1 x0 x1] + [x2 x3 x2 x3] · [1 1 −1 −1]
    (f32x4.add
      (i8x16.shuffle 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 (local.get $x) (local.get $x))
      (f32x4.mul
        (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $x) (local.get $x))
        (v128.const f32x4 1 1 -1 -1))))

  ;; The stages h = 4 … block/2 over n floats at $data (block ≥ 8; else nothing).
  (func $wide_stages (param $data i32) (param $n i32) (param $block i32)
    (local $h i32) (local $i i32) (local $j i32) (local $end i32) (local $stop i32)
    (local $a v128) (local $b v128) (local $hb i32)
    (local.set $stop (i32.add (local.get $data) (i32.shl (local.get $n) (i32.const 2))))
    (local.set $h (i32.const 4))
    (block $done
      (loop $stage
        (br_if $done (i32.ge_u (local.get $h) (local.get $block)))
        (local.set $hb (i32.shl (local.get $h) (i32.const 2)))
        (local.set $i (local.get $data))
        (loop $group
          (local.set $j (local.get $i))
          (local.set $end (i32.add (local.get $i) (local.get $hb)))
          (loop $pair
            (local.set $a (v128.load (local.get $j)))
            (local.set $b (v128.load (i32.add (local.get $j) (local.get $hb))))
            (v128.store (local.get $j) (f32x4.add (local.get $a) (local.get $b)))
            (v128.store (i32.add (local.get $j) (local.get $hb)) (f32x4.sub (local.get $a) (local.get $b)))
            (local.set $j (i32.add (local.get $j) (i32.const 16)))
            (br_if $pair (i32.lt_u (local.get $j) (local.get $end))))
          (local.set $i (i32.add (local.get $i) (i32.shl (local.get $hb) (i32.const 1))))
          (br_if $group (i32.lt_u (local.get $i) (local.get $stop))))
        (local.set $h (i32.shl (local.get $h) (i32.const 1)))
        (br $stage))))

  ;; y = H·D·x in place on $count tokens of $dim floats at $data; $signs holds D's ±1
  ;; for one token; $norm = 1/√block.
  (func (export "rotate")
    (param $data i32) (param $signs i32) (param $dim i32) (param $count i32) (param $block i32) (param $norm f32)
    (local $p i32) (local $s i32) (local $stop i32) (local $tokenEnd i32) (local $scale v128)
    (local $n i32) (local $a f32) (local $b f32)
    (local.set $n (i32.mul (local.get $dim) (local.get $count)))
    (if (i32.eqz (local.get $n)) (then (return)))
    (local.set $stop (i32.add (local.get $data) (i32.shl (local.get $n) (i32.const 2))))
    (if (i32.lt_u (local.get $block) (i32.const 4))
      (then
        ;; Blocks of 1 or 2: signs, then (b = 2) one butterfly per pair, scaled.
        (local.set $p (local.get $data))
        (loop $token
          (local.set $s (local.get $signs))
          (local.set $tokenEnd (i32.add (local.get $p) (i32.shl (local.get $dim) (i32.const 2))))
          (loop $value
            (f32.store (local.get $p) (f32.mul (f32.load (local.get $p)) (f32.load (local.get $s))))
            (local.set $p (i32.add (local.get $p) (i32.const 4)))
            (local.set $s (i32.add (local.get $s) (i32.const 4)))
            (br_if $value (i32.lt_u (local.get $p) (local.get $tokenEnd))))
          (br_if $token (i32.lt_u (local.get $p) (local.get $stop))))
        (if (i32.eq (local.get $block) (i32.const 2))
          (then
            (local.set $p (local.get $data))
            (loop $pair
              (local.set $a (f32.load (local.get $p)))
              (local.set $b (f32.load offset=4 (local.get $p)))
              (f32.store (local.get $p) (f32.mul (f32.add (local.get $a) (local.get $b)) (local.get $norm)))
              (f32.store offset=4 (local.get $p) (f32.mul (f32.sub (local.get $a) (local.get $b)) (local.get $norm)))
              (local.set $p (i32.add (local.get $p) (i32.const 8)))
              (br_if $pair (i32.lt_u (local.get $p) (local.get $stop))))))
        (return)))
    ;; Signs and the stages h = 1, 2 in one pass.
    (local.set $p (local.get $data))
    (loop $token
      (local.set $s (local.get $signs))
      (local.set $tokenEnd (i32.add (local.get $p) (i32.shl (local.get $dim) (i32.const 2))))
      (loop $vector
        (v128.store (local.get $p)
          (call $wht4 (f32x4.mul (v128.load (local.get $p)) (v128.load (local.get $s)))))
        (local.set $p (i32.add (local.get $p) (i32.const 16)))
        (local.set $s (i32.add (local.get $s) (i32.const 16)))
        (br_if $vector (i32.lt_u (local.get $p) (local.get $tokenEnd))))
      (br_if $token (i32.lt_u (local.get $p) (local.get $stop))))
    (call $wide_stages (local.get $data) (local.get $n) (local.get $block))
    ;; The orthonormal scale.
    (local.set $scale (f32x4.splat (local.get $norm)))
    (local.set $p (local.get $data))
    (loop $vector
      (v128.store (local.get $p) (f32x4.mul (v128.load (local.get $p)) (local.get $scale)))
      (local.set $p (i32.add (local.get $p) (i32.const 16)))
      (br_if $vector (i32.lt_u (local.get $p) (local.get $stop)))))

  ;; x = D·H·y in place; $factors holds sign · 1/√block for one token. A zero whose sign
  ;; was flipped comes out +0 (the + 0), as every codec decodes zeros.
  (func (export "unrotate")
    (param $data i32) (param $factors i32) (param $dim i32) (param $count i32) (param $block i32)
    (local $p i32) (local $s i32) (local $stop i32) (local $tokenEnd i32) (local $n i32)
    (local $a f32) (local $b f32)
    (local.set $n (i32.mul (local.get $dim) (local.get $count)))
    (if (i32.eqz (local.get $n)) (then (return)))
    (local.set $stop (i32.add (local.get $data) (i32.shl (local.get $n) (i32.const 2))))
    (if (i32.lt_u (local.get $block) (i32.const 4))
      (then
        (if (i32.eq (local.get $block) (i32.const 2))
          (then
            (local.set $p (local.get $data))
            (loop $pair
              (local.set $a (f32.load (local.get $p)))
              (local.set $b (f32.load offset=4 (local.get $p)))
              (f32.store (local.get $p) (f32.add (local.get $a) (local.get $b)))
              (f32.store offset=4 (local.get $p) (f32.sub (local.get $a) (local.get $b)))
              (local.set $p (i32.add (local.get $p) (i32.const 8)))
              (br_if $pair (i32.lt_u (local.get $p) (local.get $stop))))))
        (local.set $p (local.get $data))
        (loop $token
          (local.set $s (local.get $factors))
          (local.set $tokenEnd (i32.add (local.get $p) (i32.shl (local.get $dim) (i32.const 2))))
          (loop $value
            (f32.store (local.get $p)
              (f32.add (f32.mul (f32.load (local.get $p)) (f32.load (local.get $s))) (f32.const 0)))
            (local.set $p (i32.add (local.get $p) (i32.const 4)))
            (local.set $s (i32.add (local.get $s) (i32.const 4)))
            (br_if $value (i32.lt_u (local.get $p) (local.get $tokenEnd))))
          (br_if $token (i32.lt_u (local.get $p) (local.get $stop))))
        (return)))
    (local.set $p (local.get $data))
    (loop $vector
      (v128.store (local.get $p) (call $wht4 (v128.load (local.get $p))))
      (local.set $p (i32.add (local.get $p) (i32.const 16)))
      (br_if $vector (i32.lt_u (local.get $p) (local.get $stop))))
    (call $wide_stages (local.get $data) (local.get $n) (local.get $block))
    (local.set $p (local.get $data))
    (loop $token
      (local.set $s (local.get $factors))
      (local.set $tokenEnd (i32.add (local.get $p) (i32.shl (local.get $dim) (i32.const 2))))
      (loop $vector
        (v128.store (local.get $p)
          (f32x4.add (f32x4.mul (v128.load (local.get $p)) (v128.load (local.get $s))) (v128.const f32x4 0 0 0 0)))
        (local.set $p (i32.add (local.get $p) (i32.const 16)))
        (local.set $s (i32.add (local.get $s) (i32.const 16)))
        (br_if $vector (i32.lt_u (local.get $p) (local.get $tokenEnd))))
      (br_if $token (i32.lt_u (local.get $p) (local.get $stop)))))
;; ── int4 (int4-codec.ts) ─────────────────────────────────────────────────────────
;; For tokens whose groups are whole and hold a multiple of 16 values: the codec checks
;; that, computes each group's fp16 scale in JavaScript (one definition of the rounding
;; up), and leaves the per-value work here. Quantization multiplies in float64, as the
;; JavaScript codec did, so both give the same bytes: q = nearest-even(x · (1/scale)).

  ;; Per group of $g floats at $src: max over the group of the bit pattern of |x| (as
  ;; int4-codec.ts compares them: NaN and ±∞ order above every finite value), to $out.
  (func (export "group_absmax_bits") (param $src i32) (param $groups i32) (param $g i32) (param $out i32)
    (local $p i32) (local $end i32) (local $m v128)
    (if (i32.eqz (local.get $groups)) (then (return)))
    (local.set $p (local.get $src))
    (loop $group
      (local.set $end (i32.add (local.get $p) (i32.shl (local.get $g) (i32.const 2))))
      (local.set $m (v128.const i32x4 0 0 0 0))
      (loop $vector
        (local.set $m
          (i32x4.max_u (local.get $m)
            (v128.and (v128.load (local.get $p)) (v128.const i32x4 0x7fffffff 0x7fffffff 0x7fffffff 0x7fffffff))))
        (local.set $p (i32.add (local.get $p) (i32.const 16)))
        (br_if $vector (i32.lt_u (local.get $p) (local.get $end))))
      (local.set $m (i32x4.max_u (local.get $m)
        (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $m) (local.get $m))))
      (local.set $m (i32x4.max_u (local.get $m)
        (i8x16.shuffle 4 5 6 7 0 1 2 3 12 13 14 15 8 9 10 11 (local.get $m) (local.get $m))))
      (i32.store (local.get $out) (i32x4.extract_lane 0 (local.get $m)))
      (local.set $out (i32.add (local.get $out) (i32.const 4)))
      (local.set $groups (i32.sub (local.get $groups) (i32.const 1)))
      (br_if $group (local.get $groups))))

  ;; nearest-even(x · inverse) of four floats, in float64, as four int32 lanes.
  (func $quantize4 (param $v v128) (param $inverse v128) (result v128)
    (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
      (i32x4.trunc_sat_f64x2_s_zero
        (f64x2.nearest (f64x2.mul (f64x2.promote_low_f32x4 (local.get $v)) (local.get $inverse))))
      (i32x4.trunc_sat_f64x2_s_zero
        (f64x2.nearest (f64x2.mul
          (f64x2.promote_low_f32x4
            (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $v) (local.get $v)))
          (local.get $inverse))))))

  ;; Groups of $g floats at $src into int4 records at $dst: per group the scale's two
  ;; bytes (u16 from $scales) then g/2 bytes of nibbles, value k in the low nibble of
  ;; byte k/2 when k is even, the high nibble when odd. $inverses holds 1/scale (float64,
  ;; 0 for a zero scale) per group.
  (func (export "int4_quantize")
    (param $src i32) (param $groups i32) (param $g i32) (param $scales i32) (param $inverses i32) (param $dst i32)
    (local $p i32) (local $end i32) (local $inverse v128) (local $bytes v128)
    (if (i32.eqz (local.get $groups)) (then (return)))
    (local.set $p (local.get $src))
    (loop $group
      (i32.store16 (local.get $dst) (i32.load16_u (local.get $scales)))
      (local.set $dst (i32.add (local.get $dst) (i32.const 2)))
      (local.set $inverse (f64x2.splat (f64.load (local.get $inverses))))
      (local.set $end (i32.add (local.get $p) (i32.shl (local.get $g) (i32.const 2))))
      (loop $sixteen
        ;; 16 values → 16 int8 lanes in order (values are within ±7: no saturation)
        (local.set $bytes
          (i8x16.narrow_i16x8_s
            (i16x8.narrow_i32x4_s
              (call $quantize4 (v128.load (local.get $p)) (local.get $inverse))
              (call $quantize4 (v128.load offset=16 (local.get $p)) (local.get $inverse)))
            (i16x8.narrow_i32x4_s
              (call $quantize4 (v128.load offset=32 (local.get $p)) (local.get $inverse))
              (call $quantize4 (v128.load offset=48 (local.get $p)) (local.get $inverse)))))
        ;; even lanes' low nibbles | odd lanes' low nibbles << 4 → 8 bytes
        (v128.store64_lane 0 (local.get $dst)
          (v128.or
            (v128.and
              (i8x16.shuffle 0 2 4 6 8 10 12 14 0 2 4 6 8 10 12 14 (local.get $bytes) (local.get $bytes))
              (v128.const i8x16 0x0f 0x0f 0x0f 0x0f 0x0f 0x0f 0x0f 0x0f 0x0f 0x0f 0x0f 0x0f 0x0f 0x0f 0x0f 0x0f))
            (i8x16.shl
              (i8x16.shuffle 1 3 5 7 9 11 13 15 1 3 5 7 9 11 13 15 (local.get $bytes) (local.get $bytes))
              (i32.const 4))))
        (local.set $dst (i32.add (local.get $dst) (i32.const 8)))
        (local.set $p (i32.add (local.get $p) (i32.const 64)))
        (br_if $sixteen (i32.lt_u (local.get $p) (local.get $end))))
      (local.set $scales (i32.add (local.get $scales) (i32.const 2)))
      (local.set $inverses (i32.add (local.get $inverses) (i32.const 8)))
      (local.set $groups (i32.sub (local.get $groups) (i32.const 1)))
      (br_if $group (local.get $groups))))

  ;; int4 records of $groups groups of $g values at $src into floats at $dst: q · scale.
  ;; Returns the index of the first group whose scale is not a finite, non-negative
  ;; fp16 (bits ≥ 0x7c00), or −1; groups before it are decoded.
  (func (export "int4_dequantize") (param $src i32) (param $groups i32) (param $g i32) (param $dst i32) (result i32)
    (local $index i32) (local $bits i32) (local $scale v128) (local $nibbles v128) (local $values v128)
    (local $end i32) (local $words v128)
    (if (i32.eqz (local.get $groups)) (then (return (i32.const -1))))
    (loop $group
      (local.set $bits (i32.load16_u (local.get $src)))
      (if (i32.ge_u (local.get $bits) (i32.const 0x7c00)) (then (return (local.get $index))))
      ;; the half's value: subnormal m · 2^-24, else its exponent and mantissa moved
      ;; into a float32 (exact either way)
      (local.set $scale (f32x4.splat
        (if (result f32) (i32.lt_u (local.get $bits) (i32.const 0x400))
          (then (f32.mul (f32.convert_i32_u (local.get $bits)) (f32.const 0x1p-24)))
          (else (f32.reinterpret_i32
            (i32.add (i32.shl (local.get $bits) (i32.const 13)) (i32.const 0x38000000)))))))
      (local.set $src (i32.add (local.get $src) (i32.const 2)))
      (local.set $end (i32.add (local.get $dst) (i32.shl (local.get $g) (i32.const 2))))
      (loop $sixteen
        (local.set $nibbles (v128.load64_zero (local.get $src)))
        ;; low nibbles sign-extended (shift up, arithmetic shift down), high nibbles
        ;; arithmetic-shifted down; interleaved back into value order
        (local.set $values
          (i8x16.shuffle 0 16 1 17 2 18 3 19 4 20 5 21 6 22 7 23
            (i8x16.shr_s (i8x16.shl (local.get $nibbles) (i32.const 4)) (i32.const 4))
            (i8x16.shr_s (local.get $nibbles) (i32.const 4))))
        (local.set $words (i16x8.extend_low_i8x16_s (local.get $values)))
        (v128.store (local.get $dst)
          (f32x4.mul (f32x4.convert_i32x4_s (i32x4.extend_low_i16x8_s (local.get $words))) (local.get $scale)))
        (v128.store offset=16 (local.get $dst)
          (f32x4.mul (f32x4.convert_i32x4_s (i32x4.extend_high_i16x8_s (local.get $words))) (local.get $scale)))
        (local.set $words (i16x8.extend_high_i8x16_s (local.get $values)))
        (v128.store offset=32 (local.get $dst)
          (f32x4.mul (f32x4.convert_i32x4_s (i32x4.extend_low_i16x8_s (local.get $words))) (local.get $scale)))
        (v128.store offset=48 (local.get $dst)
          (f32x4.mul (f32x4.convert_i32x4_s (i32x4.extend_high_i16x8_s (local.get $words))) (local.get $scale)))
        (local.set $src (i32.add (local.get $src) (i32.const 8)))
        (local.set $dst (i32.add (local.get $dst) (i32.const 64)))
        (br_if $sixteen (i32.lt_u (local.get $dst) (local.get $end))))
      (local.set $index (i32.add (local.get $index) (i32.const 1)))
      (br_if $group (i32.lt_u (local.get $index) (local.get $groups))))
    (i32.const -1))
;; ── int8 (int8-codec.ts) ─────────────────────────────────────────────────────────
;; For tokens of a multiple of 16 values. The codec computes each token's absmax with
;; group_absmax_bits (a group = the token) and its float32 scale in JavaScript; the
;; per-value work is here, in float64 as the JavaScript loop: q = nearest-even(x · (1/s)).

  ;; $count tokens of $dim floats at $src into int8 records at $dst: per token its scale
  ;; (4 bytes from $scales), then dim int8 values; $inverses holds 1/scale (float64, 0
  ;; for a zero scale) per token.
  (func (export "int8_quantize")
    (param $src i32) (param $count i32) (param $dim i32) (param $scales i32) (param $inverses i32) (param $dst i32)
    (local $p i32) (local $end i32) (local $inverse v128)
    (if (i32.eqz (local.get $count)) (then (return)))
    (local.set $p (local.get $src))
    (loop $token
      (i32.store (local.get $dst) (i32.load (local.get $scales)))
      (local.set $dst (i32.add (local.get $dst) (i32.const 4)))
      (local.set $inverse (f64x2.splat (f64.load (local.get $inverses))))
      (local.set $end (i32.add (local.get $p) (i32.shl (local.get $dim) (i32.const 2))))
      (loop $sixteen
        ;; values are within ±127: the narrowing never saturates
        (v128.store (local.get $dst)
          (i8x16.narrow_i16x8_s
            (i16x8.narrow_i32x4_s
              (call $quantize4 (v128.load (local.get $p)) (local.get $inverse))
              (call $quantize4 (v128.load offset=16 (local.get $p)) (local.get $inverse)))
            (i16x8.narrow_i32x4_s
              (call $quantize4 (v128.load offset=32 (local.get $p)) (local.get $inverse))
              (call $quantize4 (v128.load offset=48 (local.get $p)) (local.get $inverse)))))
        (local.set $dst (i32.add (local.get $dst) (i32.const 16)))
        (local.set $p (i32.add (local.get $p) (i32.const 64)))
        (br_if $sixteen (i32.lt_u (local.get $p) (local.get $end))))
      (local.set $scales (i32.add (local.get $scales) (i32.const 4)))
      (local.set $inverses (i32.add (local.get $inverses) (i32.const 8)))
      (local.set $count (i32.sub (local.get $count) (i32.const 1)))
      (br_if $token (local.get $count))))

  ;; $count int8 records of $dim values at $src into floats at $dst: q · scale, with the
  ;; product rounded to float32 as the JavaScript loop stores it. Scales are checked by
  ;; the caller before the call.
  (func (export "int8_dequantize") (param $src i32) (param $count i32) (param $dim i32) (param $dst i32)
    (local $end i32) (local $scale v128) (local $values v128) (local $words v128)
    (if (i32.eqz (local.get $count)) (then (return)))
    (loop $token
      (local.set $scale (f32x4.splat (f32.load (local.get $src))))
      (local.set $src (i32.add (local.get $src) (i32.const 4)))
      (local.set $end (i32.add (local.get $dst) (i32.shl (local.get $dim) (i32.const 2))))
      (loop $sixteen
        (local.set $values (v128.load (local.get $src)))
        (local.set $words (i16x8.extend_low_i8x16_s (local.get $values)))
        (v128.store (local.get $dst)
          (f32x4.mul (f32x4.convert_i32x4_s (i32x4.extend_low_i16x8_s (local.get $words))) (local.get $scale)))
        (v128.store offset=16 (local.get $dst)
          (f32x4.mul (f32x4.convert_i32x4_s (i32x4.extend_high_i16x8_s (local.get $words))) (local.get $scale)))
        (local.set $words (i16x8.extend_high_i8x16_s (local.get $values)))
        (v128.store offset=32 (local.get $dst)
          (f32x4.mul (f32x4.convert_i32x4_s (i32x4.extend_low_i16x8_s (local.get $words))) (local.get $scale)))
        (v128.store offset=48 (local.get $dst)
          (f32x4.mul (f32x4.convert_i32x4_s (i32x4.extend_high_i16x8_s (local.get $words))) (local.get $scale)))
        (local.set $src (i32.add (local.get $src) (i32.const 16)))
        (local.set $dst (i32.add (local.get $dst) (i32.const 64)))
        (br_if $sixteen (i32.lt_u (local.get $dst) (local.get $end))))
      (local.set $count (i32.sub (local.get $count) (i32.const 1)))
      (br_if $token (local.get $count))))
)
