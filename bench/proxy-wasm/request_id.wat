;; bench/proxy-wasm/request_id.wat - a proxy-wasm (ABI 0.2.1) HTTP filter for Envoy that
;; does the work of Weir's first-party `request-id` plugin, for bench/scenarios.sh's
;; "plugin" scenario:
;;
;;   on the request:  read `x-request-id`; keep it when it is 36 bytes long, else make a
;;                    UUID v7 (48-bit millisecond time, 12 bits of sub-millisecond
;;                    fraction, 62 random bits from one wasi random_get call) in its
;;                    36-character hyphenated form; set it on the request (replace);
;;   on the response: set the same id on the response (replace).
;;
;; Written in the WebAssembly text format so that no Rust toolchain or crate is needed:
;; `wat2wasm` (Debian's wabt) assembles it, and bench/scenarios.sh does that itself.
;; One instance serves one Envoy worker; ids are kept per HTTP context in 1024 slots
;; indexed by context id (a benchmark has far fewer streams in flight at once).
;;
;; Memory map: 16 the header name | 64 host return pointer | 68 host return size |
;; 72 time (i64) | 80 random (8 bytes) | 96 the 16 UUID bytes | 128 hex digits |
;; 16384 + 36 * (context id % 1024) the id of a context | 65536.. allocations from the
;; host (reset at the start of every callback: nothing the host hands us is kept).
(module
  (import "env" "proxy_get_header_map_value"
    (func $get_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_replace_header_map_value"
    (func $replace_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_current_time_nanoseconds"
    (func $now_ns (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get"
    (func $random_get (param i32 i32) (result i32)))

  (memory (export "memory") 4)
  (data (i32.const 16) "x-request-id")
  (data (i32.const 128) "0123456789abcdef")

  (global $heap (mut i32) (i32.const 65536))

  (func (export "proxy_abi_version_0_2_1"))

  ;; A bump allocator over [65536, end of memory), growing the memory when needed.
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $p i32) (local $end i32)
    (local.set $p (global.get $heap))
    (local.set $end (i32.add (local.get $p) (i32.and (i32.add (local.get $size) (i32.const 7)) (i32.const -8))))
    (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.lt_s
              (memory.grow (i32.add (i32.shr_u (i32.sub (local.get $end) (i32.mul (memory.size) (i32.const 65536))) (i32.const 16)) (i32.const 1)))
              (i32.const 0))
          (then (return (i32.const 0))))))
    (global.set $heap (local.get $end))
    (local.get $p))

  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32))

  (func $slot (param $ctx i32) (result i32)
    (i32.add (i32.const 16384) (i32.mul (i32.and (local.get $ctx) (i32.const 1023)) (i32.const 36))))

  ;; Writes a new UUID v7, hyphenated, 36 bytes at $dst.
  (func $new_id (param $dst i32)
    (local $ns i64) (local $ms i64) (local $frac i64) (local $i i32) (local $o i32) (local $b i32)
    (drop (call $now_ns (i32.const 72)))
    (local.set $ns (i64.load (i32.const 72)))
    (local.set $ms (i64.div_u (local.get $ns) (i64.const 1000000)))
    (local.set $frac (i64.div_u (i64.mul (i64.rem_u (local.get $ns) (i64.const 1000000)) (i64.const 4096)) (i64.const 1000000)))
    (drop (call $random_get (i32.const 80) (i32.const 8)))
    ;; bytes 0..5: milliseconds, big-endian
    (local.set $i (i32.const 0))
    (block $done
      (loop $ms_bytes
        (br_if $done (i32.ge_u (local.get $i) (i32.const 6)))
        (i32.store8 (i32.add (i32.const 96) (local.get $i))
          (i32.wrap_i64 (i64.shr_u (local.get $ms) (i64.extend_i32_u (i32.mul (i32.sub (i32.const 5) (local.get $i)) (i32.const 8))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $ms_bytes)))
    ;; bytes 6, 7: version 7 and the 12-bit fraction
    (i32.store8 (i32.const 102) (i32.or (i32.const 0x70) (i32.and (i32.wrap_i64 (i64.shr_u (local.get $frac) (i64.const 8))) (i32.const 0x0f))))
    (i32.store8 (i32.const 103) (i32.wrap_i64 (local.get $frac)))
    ;; bytes 8..15: the variant and 62 random bits
    (i64.store (i32.const 104) (i64.load (i32.const 80)))
    (i32.store8 (i32.const 104) (i32.or (i32.const 0x80) (i32.and (i32.load8_u (i32.const 104)) (i32.const 0x3f))))
    ;; hex, with hyphens after bytes 4, 6, 8 and 10
    (local.set $i (i32.const 0))
    (local.set $o (local.get $dst))
    (block $done
      (loop $hex
        (br_if $done (i32.ge_u (local.get $i) (i32.const 16)))
        (if (i32.or (i32.or (i32.eq (local.get $i) (i32.const 4)) (i32.eq (local.get $i) (i32.const 6)))
                    (i32.or (i32.eq (local.get $i) (i32.const 8)) (i32.eq (local.get $i) (i32.const 10))))
          (then
            (i32.store8 (local.get $o) (i32.const 45))
            (local.set $o (i32.add (local.get $o) (i32.const 1)))))
        (local.set $b (i32.load8_u (i32.add (i32.const 96) (local.get $i))))
        (i32.store8 (local.get $o) (i32.load8_u (i32.add (i32.const 128) (i32.shr_u (local.get $b) (i32.const 4)))))
        (i32.store8 (i32.add (local.get $o) (i32.const 1)) (i32.load8_u (i32.add (i32.const 128) (i32.and (local.get $b) (i32.const 15)))))
        (local.set $o (i32.add (local.get $o) (i32.const 2)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $hex))))

  (func (export "proxy_on_request_headers") (param $ctx i32) (param i32 i32) (result i32)
    (local $slot i32) (local $size i32)
    (global.set $heap (i32.const 65536))
    (local.set $slot (call $slot (local.get $ctx)))
    (i32.store (i32.const 68) (i32.const 0))
    (if (i32.eqz (call $get_header (i32.const 0) (i32.const 16) (i32.const 12) (i32.const 64) (i32.const 68)))
      (then (local.set $size (i32.load (i32.const 68)))))
    ;; an incoming id of the slot's size is kept (the bench's clients send none)
    (if (i32.eq (local.get $size) (i32.const 36))
      (then (memory.copy (local.get $slot) (i32.load (i32.const 64)) (i32.const 36)))
      (else (call $new_id (local.get $slot))))
    (drop (call $replace_header (i32.const 0) (i32.const 16) (i32.const 12) (local.get $slot) (i32.const 36)))
    (i32.const 0))

  (func (export "proxy_on_response_headers") (param $ctx i32) (param i32 i32) (result i32)
    (global.set $heap (i32.const 65536))
    (drop (call $replace_header (i32.const 2) (i32.const 16) (i32.const 12) (call $slot (local.get $ctx)) (i32.const 36)))
    (i32.const 0)))
