namespace OdaKvmBackup.Core.Stores;

/// <summary>
/// POSIX sh scripts run on an SSH server (by <see cref="Stores.Ssh.SshClient.RunScriptAsync"/>: <c>sh -c SCRIPT sh ARGS</c>),
/// for the work that belongs where the files lie: reading a copy back to verify it, and cloning a set's copy into
/// the next set. They need nothing beyond what any Linux server has, and use faster tools when there are some.
/// </summary>
internal static class ServerScripts
{
    /// <summary>Exit code of both scripts when the file to read is not a readable regular file.</summary>
    public const int FileMissing = 2;

    /// <summary>Exit code of <see cref="CloneFile"/> when something is already at the new file's path.</summary>
    public const int TargetExists = 3;

    /// <summary>
    /// Prints "tool &lt;tool&gt;" (the hashing tool it runs, as a path or a name), then "&lt;index&gt; &lt;sha256&gt;"
    /// for each asked segment of a file (the plain SHA-256 of its bytes, as sha256sum prints it), every asked segment
    /// read, all-zero ones too. Arguments, as for the store's first script:
    /// the file, dd's block size, blocks per segment, then the segment indexes. The file's cached pages are dropped
    /// first (GNU dd; elsewhere a no-op), so what is read is what the storage holds; a missing or unreadable file
    /// ends it with <see cref="FileMissing"/>, a segment that cannot be read with another non-zero code.
    /// <para>
    /// The hashing: Debian's sha256sum does not use the CPU's SHA extensions (3 s per GiB here), OpenSSL does, and so does
    /// Python's hashlib where it is OpenSSL's (its _hashlib module). So: such a Python (python3; Oracle Linux 8's
    /// platform-python; python2.7, Oracle Linux 7's), several segments at once on threads (hashlib and reads release
    /// the GIL), a segment that is all hole (SEEK_DATA) taken as the zeros it reads as; python3 reads with O_DIRECT
    /// (8 MiB reads into an mmap'd buffer with os.preadv: no page cache to fill, 3 times less system CPU, wall time
    /// as buffered reads on the lab host), python2 or a file system that refuses O_DIRECT (EINVAL) or a segment not
    /// aligned to 4 KiB through the cache, its pages dropped after reading where os.posix_fadvise exists;
    /// else <c>openssl dgst -sha256</c>, else sha256sum, over dd, as many
    /// segments at once as the server has cores.
    /// <c>ODAKVM_DIGEST_TOOL</c> (a Python, <c>openssl</c> or <c>sha256sum</c>) forces one.
    /// </para>
    /// </summary>
    public const string SegmentDigests = """
        file=$1 bs=$2 count=$3
        shift 3
        if [ ! -f "$file" ] || [ ! -r "$file" ]; then echo "no readable file $file" >&2; exit 2; fi
        tool=${ODAKVM_DIGEST_TOOL:-}
        if [ -z "$tool" ]; then
          for candidate in python3 /usr/libexec/platform-python python2.7 python2; do
            # _hashlib is OpenSSL's: a Python built without it hashes with its own slow code, slower than openssl.
            if "$candidate" -c 'import _hashlib, hashlib, os, threading; hashlib.sha256()' >/dev/null 2>&1; then tool=$candidate; break; fi
          done
        fi
        if [ -z "$tool" ]; then
          if echo | openssl dgst -sha256 >/dev/null 2>&1; then tool=openssl; else tool=sha256sum; fi
        fi
        dd if="$file" iflag=nocache count=0 2>/dev/null
        echo "tool $tool"
        case $tool in
        openssl|sha256sum)
          if [ "$tool" = openssl ]; then sum='openssl dgst -sha256'; else sum=sha256sum; fi
          printf '%s\n' "$@" | xargs -n 1 -P "$(nproc 2>/dev/null || echo 2)" sh -c '
            case $5 in ""|*[!0-9]*) echo "no segment index: $5" >&2; exit 255 ;; esac
            r=$( { { dd if="$1" bs="$2" skip=$(($3 * $5)) count="$3" 2>/dev/null; echo "dd=$?" >&3; } | $4; } 3>&1 )
            case $r in *dd=0*) ;; *) echo "cannot read segment $5 of $1" >&2; exit 255 ;; esac
            sum=; for word in $r; do [ ${#word} -eq 64 ] && sum=$word; done
            if [ -z "$sum" ]; then echo "no digest of segment $5 of $1: $r" >&2; exit 255; fi
            printf "%s %s\n" "$5" "$sum"
          ' sh "$file" "$bs" "$count" "$sum"
          ;;
        *)
          exec "$tool" -c '
        import errno, hashlib, mmap, os, sys, threading
        path, size = sys.argv[1], int(sys.argv[2]) * int(sys.argv[3])
        pending = [int(a) for a in sys.argv[4:]][::-1]
        seek_data = getattr(os, "SEEK_DATA", 3)
        fadvise = getattr(os, "posix_fadvise", None)
        lock, failures, zeros = threading.Lock(), [], {}
        direct = [hasattr(os, "O_DIRECT") and hasattr(os, "preadv")]
        def digest(fd, direct_fd, buffer, end_of_file, index):
            start = index * size
            end = max(start, min(start + size, end_of_file))
            try:
                hole = start < end and os.lseek(fd, start, seek_data) >= end
            except OSError as e:
                hole = e.errno == errno.ENXIO
            if hole:
                return zero_digest(end - start)
            if direct_fd is not None and direct[0] and start % 4096 == 0:
                h = read_direct(direct_fd, buffer, start, end)
                if h is not None:
                    return h.hexdigest()
            h = hashlib.sha256()
            os.lseek(fd, start, 0)
            left = end - start
            while left > 0:
                data = os.read(fd, min(left, 1 << 20))
                if not data:
                    break
                h.update(data)
                left -= len(data)
            if fadvise and end > start:
                fadvise(fd, start, end - start, os.POSIX_FADV_DONTNEED)
            return h.hexdigest()
        def read_direct(fd, buffer, start, end):
            # O_DIRECT: no page cache to fill and drop. None where the file system refuses it (EINVAL).
            h, view, at = hashlib.sha256(), memoryview(buffer), start
            while at < end:
                try:
                    got = os.preadv(fd, [view[:min(len(buffer), (end - at + 4095) // 4096 * 4096)]], at)
                except OSError as e:
                    if e.errno != errno.EINVAL:
                        raise
                    direct[0] = False
                    return None
                if got <= 0:
                    break
                h.update(view[:min(got, end - at)])
                at += got
            return h
        def zero_digest(count):
            with lock:
                if count not in zeros:
                    h, block, left = hashlib.sha256(), bytes(bytearray(1 << 20)), count
                    while left > 0:
                        h.update(block[:min(left, len(block))])
                        left -= min(left, len(block))
                    zeros[count] = h.hexdigest()
                return zeros[count]
        def work():
            index = None
            try:
                fd, direct_fd, buffer = os.open(path, os.O_RDONLY), None, None
                if direct[0]:
                    try:
                        direct_fd, buffer = os.open(path, os.O_RDONLY | os.O_DIRECT), mmap.mmap(-1, 8 << 20)
                    except OSError as e:
                        if e.errno != errno.EINVAL:
                            raise
                try:
                    end_of_file = os.fstat(fd).st_size
                    while True:
                        with lock:
                            if not pending or failures:
                                return
                            index = pending.pop()
                        line = "%d %s\n" % (index, digest(fd, direct_fd, buffer, end_of_file, index))
                        with lock:
                            sys.stdout.write(line)
                finally:
                    os.close(fd)
                    if direct_fd is not None:
                        os.close(direct_fd)
            except Exception as e:
                with lock:
                    failures.append("cannot read segment %s of %s: %s" % (index, path, e))
        threads = [threading.Thread(target=work) for _ in range(max(1, min(len(pending), os.sysconf("SC_NPROCESSORS_ONLN"), 8)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sys.stdout.flush()
        if failures:
            sys.stderr.write("\n".join(failures) + "\n")
            sys.exit(1)
        ' "$file" "$bs" "$count" "$@"
          ;;
        esac
        """;

    /// <summary>
    /// Makes a new file <c>$2</c> with the content of <c>$1</c> (a copy in an earlier set) by the server's own file
    /// system, and prints how: <c>reflink</c> (<c>cp --reflink=always</c>: XFS, btrfs; the blocks are shared, which
    /// costs no space and no time, and writing to either file later never changes the other) or, where the file
    /// system cannot clone, <c>local copy</c> (<c>cp --sparse=always</c>: holes stay holes; the network is spared).
    /// The base is only read, and must be a regular file (a link is refused, and <c>cp -P</c> would copy a link
    /// swapped in meanwhile as a link, never what it points to); the new file must not exist (else
    /// <see cref="TargetExists"/>: cp creates a new file with O_EXCL, so it never writes through a link planted
    /// there) and is left 0600 (umask 077, then chmod). A clone that failed leaves an empty file, removed before the
    /// copy; a copy that failed is removed too, and the script ends non-zero with both tools' errors. After how it
    /// was made, a second line: the new file's size, its allocated 512-byte blocks (<c>stat -c '%s %b'</c>).
    /// </summary>
    public const string CloneFile = """
        base=$1 new=$2
        if [ ! -f "$base" ] || [ -L "$base" ] || [ ! -r "$base" ]; then echo "no readable regular file $base" >&2; exit 2; fi
        if [ -e "$new" ] || [ -L "$new" ]; then echo "$new already exists" >&2; exit 3; fi
        umask 077
        remove_new() { if [ -f "$new" ] && [ ! -L "$new" ]; then rm -f -- "$new"; fi; }
        if cloned=$(cp -P -T --reflink=always -- "$base" "$new" 2>&1); then
          how=reflink
        else
          remove_new
          if copied=$(cp -P -T --sparse=always -- "$base" "$new" 2>&1); then
            how='local copy'
          else
            remove_new
            echo "cannot clone $base ($cloned) nor copy it ($copied)" >&2
            exit 1
          fi
        fi
        if [ -L "$new" ] || ! chmod 600 -- "$new"; then echo "cannot make $new private" >&2; remove_new; exit 1; fi
        if ! size=$(stat -c '%s %b' -- "$new"); then echo "cannot look at $new" >&2; remove_new; exit 1; fi
        echo "$how"
        echo "$size"
        """;

    /// <summary><see cref="SegmentDigests"/> with its tool forced: a Python interpreter, <c>openssl</c> or <c>sha256sum</c>.</summary>
    public static string SegmentDigestsWith(string tool) =>
        "ODAKVM_DIGEST_TOOL=" + Stores.Ssh.SshClient.QuoteForShell(tool) + "\n" + SegmentDigests;
}
