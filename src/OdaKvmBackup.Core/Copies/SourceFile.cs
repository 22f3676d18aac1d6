using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace OdaKvmBackup.Core.Copies;

internal static partial class SparseCopy
{
    // One read asks for this many chunks (one preadv into as many buffers), and the reads run this many chunks ahead
    // of the thread that looks at them: O_DIRECT has no kernel read-ahead, so the next read is in flight while the
    // chunks of the last one are searched for data. 4 MiB requests 8 chunks ahead: on the lab host (a busy one)
    // the digest list of a 16 GiB vdisk took 19.6 s against 25.2 s with 2 MiB 4 ahead and 26.5 s with 1 MiB 4 ahead.
    private const int RequestChunks = 4;
    private const int ReadAheadChunks = 8;
    private const int EIntr = 4;
    private const int EInval = 22;
    private const int ORdOnly = 0;
    private const int OCloExec = 0x80000;

    // O_DIRECT is 040000 on x86-64 (ODA hosts), 0200000 on ARM.
    private static int ODirect => RuntimeInformation.ProcessArchitecture is Architecture.Arm64 or Architecture.Arm ? 0x10000 : 0x4000;

    /// <summary>
    /// The source of a copy or a verification, read past the page cache (O_DIRECT) where its file system allows it:
    /// a backup reads whole disks, and through the cache it would push the host's working set out (an ODA host runs
    /// databases) and cost more CPU in the kernel than the hashing. Coherence: QEMU may hold dirty pages of the disk in
    /// the host's page cache (cache=writeback); an O_DIRECT read writes back the dirty pages of its range first, and the
    /// snapshot flushed the disk, so the read sees the frozen content. For a verification, O_DIRECT is what "read what
    /// the storage holds" asks for. Where O_DIRECT is refused (tmpfs and some FUSE file systems refuse the open; a
    /// device may refuse the first read), the source is read through the cache, as before, with no word to anyone.
    /// The buffered handle is always open: for lseek, and for what a direct read leaves (a file that shrank).
    /// </summary>
    private sealed class SourceFile : IDisposable
    {
        private readonly string _path;
        private SafeFileHandle? _direct;
        private bool _proved; // a direct read succeeded: a later EINVAL is an error, not a refusal of O_DIRECT

        private SourceFile(string path, SafeFileHandle handle, SafeFileHandle? direct)
        {
            _path = path;
            Handle = handle;
            _direct = direct;
            if (direct is null)
                ReadThroughCache();
        }

        /// <summary>The source opened for buffered reads (and lseek).</summary>
        public SafeFileHandle Handle { get; }

        /// <summary>Whether every read so far went past the page cache.</summary>
        public bool ReadsDirectly => _direct is not null;

        public static SourceFile Open(string path)
        {
            var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            // The same file opened again through its descriptor, not by its path: whatever the path names by now.
            // The buffered open worked, so a failure here is the file system refusing O_DIRECT (EINVAL): read through the cache.
            var fd = OpenFile($"/proc/self/fd/{handle.DangerousGetHandle()}", ORdOnly | ODirect | OCloExec);
            return new SourceFile(path, handle, fd >= 0 ? new SafeFileHandle(fd, ownsHandle: true) : null);
        }

        /// <summary>Reads <paramref name="length"/> bytes at <paramref name="offset"/> (a multiple of the chunk size)
        /// into <paramref name="count"/> buffers, one chunk each; what lies past the end of the file reads as zeros.
        /// <paramref name="extentEnd"/>: where the data extent being read ends (how far buffered reads may fetch ahead).</summary>
        public void Read(ChunkBuffer[] buffers, int count, long offset, long length, long extentEnd)
        {
            long done = 0;
            if (_direct is not null)
            {
                done = ReadDirect(buffers, count, offset, length);
                if (done >= length)
                    return;
                if (done < 0)
                    done = 0; // O_DIRECT refused: all through the cache
            }
            else if (offset + BufferedReadAhead < extentEnd)
            {
                // The kernel reads the extent ahead while this thread waits for the others. Never past the extent's
                // end, where it would fill a hole's page cache with zeros that SEEK_DATA then reports as data.
                _ = PosixFadvise((int)Handle.DangerousGetHandle(), offset + BufferedReadAhead,
                    Math.Min(length, extentEnd - offset - BufferedReadAhead), FadviseWillNeed);
            }
            for (var i = 0; i < count; i++)
            {
                var start = (long)i * ChunkSize;
                var end = Math.Min(start + ChunkSize, length);
                if (done >= end)
                    continue;
                var from = (int)(Math.Max(done, start) - start);
                ReadFully(Handle, buffers[i].Span[from..(int)(end - start)], offset + start + from);
            }
        }

        public void Dispose()
        {
            _direct?.Dispose();
            Handle.Dispose();
        }

        /// <summary>One preadv of the length rounded up to 4 KiB (the last chunk of a file; the read stops at its
        /// end): the bytes read, or -1 when the first direct read is refused (EINVAL) and the source is from now on
        /// read through the cache.</summary>
        private unsafe long ReadDirect(ChunkBuffer[] buffers, int count, long offset, long length)
        {
            var asked = (length + BlockSize - 1) & ~(long)(BlockSize - 1);
            var vectors = stackalloc IoVector[count];
            var used = 0;
            for (long left = asked; left > 0; left -= ChunkSize, used++)
                vectors[used] = new IoVector(buffers[used].Pointer, (nuint)Math.Min(ChunkSize, left));
            while (true)
            {
                var n = PReadV((int)_direct!.DangerousGetHandle(), vectors, used, offset);
                if (n >= 0)
                {
                    _proved = true;
                    return n;
                }
                var errno = Marshal.GetLastPInvokeError();
                if (errno == EIntr)
                    continue;
                if (errno == EInval && !_proved)
                {
                    _direct.Dispose();
                    _direct = null;
                    ReadThroughCache();
                    return -1;
                }
                throw new IOException($"Cannot read '{_path}' at offset {offset} (errno {errno}).");
            }
        }

        private void ReadThroughCache() => _ = PosixFadvise((int)Handle.DangerousGetHandle(), 0, 0, FadviseSequential);
    }

    /// <summary>A chunk's buffer at a 4 KiB-aligned address, as O_DIRECT needs: a pinned array a page longer, used from
    /// its first aligned byte. Managed memory: a writer still holding a slice of it can never see it freed.</summary>
    private sealed unsafe class ChunkBuffer
    {
        private readonly byte[] _array = GC.AllocateUninitializedArray<byte>(ChunkSize + BlockSize, pinned: true);
        private readonly int _start;

        public ChunkBuffer()
        {
            var address = (nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_array));
            _start = (int)((BlockSize - (address & (BlockSize - 1))) & (BlockSize - 1));
        }

        public Span<byte> Span => _array.AsSpan(_start, ChunkSize);

        public Memory<byte> Memory => _array.AsMemory(_start, ChunkSize);

        public byte* Pointer => (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_array)) + _start;
    }

    /// <summary>
    /// A thread that reads the data extents' chunks in order, a request of <see cref="RequestChunks"/> at a time, and
    /// hands them to the walking thread, at most <see cref="ReadAheadChunks"/> ahead; its failure stops the copy and
    /// is thrown by <see cref="Finish"/>.
    /// </summary>
    private sealed class ReadAhead(SourceFile source, long size, BlockingCollection<ChunkBuffer> free, CancellationTokenSource stop) : IDisposable
    {
        private readonly BlockingCollection<(long Offset, int Length, ChunkBuffer Buffer)> _ready = new(ReadAheadChunks);
        private Thread? _thread;
        private ExceptionDispatchInfo? _failure;

        public void Start()
        {
            _thread = new Thread(Run) { IsBackground = true, Name = "OdaKvmBackup reads" };
            _thread.Start();
        }

        /// <summary>The chunks that hold data, in order: offset, length (the last one of the file may be short), bytes.</summary>
        public IEnumerable<(long Offset, int Length, ChunkBuffer Buffer)> Chunks(CancellationToken ct) => _ready.GetConsumingEnumerable(ct);

        /// <summary>Waits for the thread and throws its failure.</summary>
        public void Finish()
        {
            _thread?.Join();
            _failure?.Throw();
        }

        public void Dispose()
        {
            if (_thread is { IsAlive: true })
            {
                stop.Cancel();
                _thread.Join();
            }
            _ready.Dispose();
        }

        private void Run()
        {
            try
            {
                var ct = stop.Token;
                var buffers = new ChunkBuffer[RequestChunks];
                long next = 0;
                foreach (var (start, end) in DataExtents(source.Handle, size))
                {
                    // A chunk that straddles two extents is read once, with the first.
                    for (var chunk = Math.Max(start - start % ChunkSize, next); chunk < end; chunk += (long)RequestChunks * ChunkSize)
                    {
                        var count = (int)Math.Min(RequestChunks, (end - chunk + ChunkSize - 1) / ChunkSize);
                        var length = Math.Min((long)count * ChunkSize, size - chunk);
                        for (var i = 0; i < count; i++)
                            buffers[i] = free.Take(ct);
                        source.Read(buffers, count, chunk, length, end);
                        for (var i = 0; i < count; i++)
                        {
                            var offset = chunk + (long)i * ChunkSize;
                            _ready.Add((offset, (int)Math.Min(ChunkSize, size - offset), buffers[i]), ct);
                        }
                        next = chunk + (long)count * ChunkSize;
                    }
                }
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
            }
            catch (Exception ex)
            {
                _failure = ExceptionDispatchInfo.Capture(ex);
                stop.Cancel();
            }
            finally
            {
                _ready.CompleteAdding();
            }
        }
    }

    [StructLayout(LayoutKind.Sequential)]
    private readonly unsafe struct IoVector(byte* address, nuint length)
    {
        public readonly byte* Address = address;
        public readonly nuint Length = length;
    }

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int OpenFile(string path, int flags);

    [LibraryImport("libc", EntryPoint = "preadv", SetLastError = true)]
    private static unsafe partial long PReadV(int fd, IoVector* vectors, int count, long offset);
}
