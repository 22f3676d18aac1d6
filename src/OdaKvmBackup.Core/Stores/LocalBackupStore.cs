using System.Security.Cryptography;
using Microsoft.Win32.SafeHandles;

namespace OdaKvmBackup.Core.Stores;

/// <summary>Backup sets in a local folder or on an NFS mount.</summary>
internal sealed partial class LocalBackupStore : IBackupStore
{
    public LocalBackupStore(string root) => Location = Normalize(root);

    public string Location { get; }

    public bool IsRemote => false;

    public string Describe(string relativePath) => Full(relativePath);

    /// <summary>The parameter the folder was given with, for messages ("-Destination").</summary>
    public string ParameterName { get; init; } = "Destination";

    public Task CheckWritableAsync(CancellationToken ct)
    {
        Paths.FileSystemPaths.RequireWritableFolder(Location, ParameterName);
        return Task.CompletedTask;
    }

    public Task<long> GetFreeBytesAsync(CancellationToken ct) => Task.FromResult(new DriveInfo(Location).AvailableFreeSpace);

    public Task<StoreEntry?> GetEntryAsync(string relativePath, CancellationToken ct)
    {
        var path = Full(relativePath);
        FileSystemInfo info = Directory.Exists(path) ? new DirectoryInfo(path) : new FileInfo(path);
        return Task.FromResult(info.Exists ? ToEntry(info) : null);
    }

    public Task<IReadOnlyList<StoreEntry>> ListAsync(string relativeFolder, CancellationToken ct)
    {
        var folder = new DirectoryInfo(Full(relativeFolder));
        IReadOnlyList<StoreEntry> entries = folder.Exists
            ? folder.EnumerateFileSystemInfos().Select(ToEntry).OrderBy(e => e.Name, StringComparer.Ordinal).ToList()
            : [];
        return Task.FromResult(entries);
    }

    public Task CreateFolderAsync(string relativePath, CancellationToken ct)
    {
        Wrap(relativePath, () => PrivateFiles.CreateFolder(Full(relativePath)));
        return Task.CompletedTask;
    }

    public Task WriteSmallFileAsync(string relativePath, byte[] content, CancellationToken ct)
    {
        Wrap(relativePath, () => PrivateFiles.WriteAtomically(Full(relativePath), content));
        return Task.CompletedTask;
    }

    /// <summary>Only a regular file within its cap is read: a FIFO, device, socket, folder or link is refused
    /// without being opened or followed (see <see cref="SmallFiles"/>).</summary>
    public Task<byte[]> ReadSmallFileAsync(string relativePath, CancellationToken ct) =>
        Task.FromResult(SmallFiles.ReadLocal(Full(relativePath), SmallFiles.LimitFor(relativePath)));

    public Task<IStoreFileWriter> CreateFileAsync(string relativePath, CancellationToken ct)
    {
        var path = Full(relativePath);
        IStoreFileWriter writer = null!;
        Wrap(relativePath, () =>
        {
            File.Delete(path); // our own leftover (a .partial of this very file); CreateNew below never follows a link
            writer = new Writer(PrivateFiles.CreateNew(path));
        });
        return Task.FromResult(writer);
    }

    /// <summary>FICLONE, else a sparse copy on the same file system (<see cref="FileClone"/>); both paths inside the
    /// root and reached through no symbolic link below it, as for <see cref="OpenStoredFile"/>.</summary>
    public Task<CloneResult> CloneFileAsync(string baseRelative, string newRelative, CancellationToken ct)
    {
        var basePath = Full(baseRelative);
        var newPath = Full(newRelative);
        RequireNoLinkOnTheWay(baseRelative, "it was not cloned");
        RequireNoLinkOnTheWay(newRelative, "nothing was made there");
        return FileClone.CloneAsync(basePath, newPath, ct);
    }

    /// <summary>The file must be there and a regular file: opened without O_CREAT, O_TRUNC or following a link,
    /// made 0600 again (what a clone of an older set may not be), written in place.</summary>
    public Task<IStoreFileWriter> OpenForWriteAsync(string relativePath, CancellationToken ct)
    {
        var path = Full(relativePath);
        try
        {
            RequireNoLinkOnTheWay(relativePath, "nothing was written to it");
            var handle = NativeFiles.OpenExistingForWriteNoFollow(path);
            try
            {
                if (SmallFiles.NonRegularKind(NativeFiles.FStat(handle).Mode) is { } kind)
                    throw SmallFiles.NotAStoredCopy(path, $"is {kind}, not a regular file", "nothing was written to it");
                File.SetUnixFileMode(handle, PrivateFiles.FileMode);
                return Task.FromResult<IStoreFileWriter>(new Writer(new FileStream(handle, FileAccess.ReadWrite, bufferSize: 0)));
            }
            catch
            {
                handle.Dispose();
                throw;
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw StoreErrors.FromIOException(ex, path);
        }
    }

    public Task<IStoreFileReader> OpenReadAsync(string relativePath, CancellationToken ct) =>
        Task.FromResult<IStoreFileReader>(new Reader(OpenStoredFile(relativePath)));

    public Task RenameAsync(string from, string to, CancellationToken ct)
    {
        Wrap(to, () =>
        {
            var source = Full(from);
            if (Directory.Exists(source))
                Directory.Move(source, Full(to));
            else
                File.Move(source, Full(to), overwrite: true);
            PrivateFiles.FsyncDirectory(Path.GetDirectoryName(Full(to))!);
        });
        return Task.CompletedTask;
    }

    public Task DeleteAsync(string relativePath, bool recursive, CancellationToken ct)
    {
        var path = Full(relativePath);
        Wrap(relativePath, () =>
        {
            if (Directory.Exists(path))
                Directory.Delete(path, recursive);
            else if (File.Exists(path))
                File.Delete(path);
            else
                return;
            PrivateFiles.FsyncDirectory(Path.GetDirectoryName(path)!);
        });
        return Task.CompletedTask;
    }

    public Task<IReadOnlyList<string>> SegmentDigestsAsync(string relativePath, long segmentSize, IReadOnlyList<long> segmentIndexes, CancellationToken ct) =>
        Task.Run<IReadOnlyList<string>>(() =>
        {
            using var handle = OpenStoredFile(relativePath);
            Copies.SparseCopy.DropFromCache(handle);
            var size = RandomAccess.GetLength(handle);
            var buffer = new byte[Math.Min(segmentSize, 4L << 20)];
            var digests = new List<string>();
            foreach (var index in segmentIndexes)
            {
                using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
                for (var offset = index * segmentSize; offset < Math.Min(size, (index + 1) * segmentSize);)
                {
                    ct.ThrowIfCancellationRequested();
                    var n = RandomAccess.Read(handle, buffer.AsSpan(0, (int)Math.Min(buffer.Length, (index + 1) * segmentSize - offset)), offset);
                    if (n == 0)
                        break;
                    hash.AppendData(buffer, 0, n);
                    offset += n;
                }
                digests.Add(Convert.ToHexString(hash.GetHashAndReset()).ToLowerInvariant());
            }
            return digests;
        }, ct);

    public Task<IReadOnlyList<long>> FindNonZeroAsync(string relativePath, IReadOnlyList<(long Offset, long Length)> ranges, CancellationToken ct) =>
        Task.Run<IReadOnlyList<long>>(() =>
        {
            using var handle = OpenStoredFile(relativePath);
            Copies.SparseCopy.DropFromCache(handle);
            var buffer = new byte[4 << 20];
            var found = new List<long>();
            foreach (var (offset, length) in ranges)
            {
                for (var position = offset; position < offset + length;)
                {
                    ct.ThrowIfCancellationRequested();
                    var n = RandomAccess.Read(handle, buffer.AsSpan(0, (int)Math.Min(buffer.Length, offset + length - position)), position);
                    if (n == 0)
                        break;
                    var first = buffer.AsSpan(0, n).IndexOfAnyExcept((byte)0);
                    if (first >= 0)
                    {
                        found.Add(position + first);
                        break;
                    }
                    position += n;
                }
            }
            return found;
        }, ct);

    public Task<StoreOwnership?> GetOwnershipAsync(string relativePath, CancellationToken ct)
    {
        var path = Full(relativePath);
        try
        {
            return Task.FromResult(NativeFiles.LStat(path) is { } status
                ? new StoreOwnership(path, status.Uid, status.Permissions, status.IsDirectory, status.IsSymbolicLink)
                : null);
        }
        catch (IOException ex)
        {
            throw StoreErrors.FromIOException(ex, path);
        }
    }

    public Task<uint> GetWriterIdAsync(CancellationToken ct) => Task.FromResult(NativeFiles.EffectiveUserId());

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;

    /// <summary>The host path of a store path, proven to lie under the root (a name from a set may try to leave it).</summary>
    private string Full(string relativePath) =>
        relativePath.Length == 0 ? Location : Paths.FileSystemPaths.JoinInside(Location, relativePath, $"A path in the store '{Location}'");

    /// <summary>
    /// Opens a stored file for reading only when it is a regular file reached through no symbolic link below the
    /// root: a set's folder linked to /var/lib/libvirt/images, or a copy linked to a host disk or made a FIFO, would
    /// hand the host's data (or a read that never ends) to whoever reads the set. Looked at without following
    /// links, opened with O_NOFOLLOW | O_NONBLOCK, and the open file looked at again.
    /// </summary>
    private SafeFileHandle OpenStoredFile(string relativePath)
    {
        var path = Full(relativePath);
        try
        {
            RequireNoLinkOnTheWay(relativePath);
            return SmallFiles.OpenLocal(path, status =>
            {
                if (SmallFiles.NonRegularKind(status.Mode) is { } kind)
                    throw SmallFiles.NotAStoredCopy(path, $"is {kind}, not a regular file");
            }, out _);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw StoreErrors.FromIOException(ex, path);
        }
    }

    /// <summary>Throws BackupCopyUnsafe when a folder between the root and the file is a symbolic link (a set's
    /// folder linked to /var/lib/libvirt/images). <paramref name="relativePath"/> is one <see cref="Full"/> checked.</summary>
    private void RequireNoLinkOnTheWay(string relativePath, string untouched = "it was not read")
    {
        var onTheWay = Location;
        foreach (var folder in relativePath.Split('/', StringSplitOptions.RemoveEmptyEntries).SkipLast(1))
        {
            onTheWay = Paths.FileSystemPaths.JoinChecked(onTheWay, folder); // parts of the path Full() checked
            if (NativeFiles.LStat(onTheWay) is { IsSymbolicLink: true })
                throw SmallFiles.NotAStoredCopy(Full(relativePath), $"is reached through '{onTheWay}', a symbolic link", untouched);
        }
    }

    private static string Normalize(string path)
    {
        var full = Path.GetFullPath(path);
        return full.Length > 1 ? full.TrimEnd(Path.DirectorySeparatorChar) : full;
    }

    private static StoreEntry ToEntry(FileSystemInfo info) => new(info.Name, info is DirectoryInfo,
        info is FileInfo file ? file.Length : 0, info.LastWriteTimeUtc, info.UnixFileMode);

    /// <summary>File-system failures become errors that name the path, the cause and a fix.</summary>
    private void Wrap(string relativePath, Action action)
    {
        try
        {
            action();
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw StoreErrors.FromIOException(ex, Describe(relativePath));
        }
    }

    /// <summary>
    /// Writes at offsets, 128 KiB at a time as cp does, and starts the write-back of every 8 MiB written at once
    /// (sync_file_range, without waiting), so the disk writes while the copy reads and hashes and the final fsync has
    /// little left. Measured on the lab (tools/Measure-Backup.ps1 and alternating A/B runs, 1 GiB of data): 1 MiB
    /// writes made the kernel's share of a copy 2-5 times larger (large page-cache folios) and the copy 2-3 times
    /// slower; one fsync at the end left 0.5 s of write-back after the last read.
    /// </summary>
    private sealed partial class Writer(FileStream stream) : IStoreFileWriter
    {
        private const int WriteSize = 128 << 10;
        private const long WriteBackEvery = 8L << 20;
        private const int SyncFileRangeWrite = 2;
        private long _unflushed;
        private long _flushedUpTo;
        private long _highest;

        public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken ct)
        {
            var span = data.Span;
            for (var done = 0; done < span.Length; done += WriteSize)
                RandomAccess.Write(stream.SafeFileHandle, span.Slice(done, Math.Min(WriteSize, span.Length - done)), offset + done);
            _unflushed += data.Length;
            _highest = Math.Max(_highest, offset + data.Length);
            if (_unflushed >= WriteBackEvery)
            {
                // Only a head start: where the call is missing or refused, the final fsync does all the work.
                _ = SyncFileRange((int)stream.SafeFileHandle.DangerousGetHandle(), _flushedUpTo, _highest - _flushedUpTo, SyncFileRangeWrite);
                _flushedUpTo = _highest;
                _unflushed = 0;
            }
            return ValueTask.CompletedTask;
        }

        public Task CompleteAsync(long size, CancellationToken ct)
        {
            stream.SetLength(size);
            stream.Flush(flushToDisk: true);
            Copies.SparseCopy.DropFromCache(stream.SafeFileHandle);
            return Task.CompletedTask;
        }

        public ValueTask DisposeAsync() => stream.DisposeAsync();

        [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "sync_file_range")]
        private static partial int SyncFileRange(int fd, long offset, long nbytes, int flags);
    }

    private sealed class Reader(SafeFileHandle handle) : IStoreFileReader
    {
        public long Size { get; } = RandomAccess.GetLength(handle);

        public ValueTask<int> ReadAsync(long offset, Memory<byte> buffer, CancellationToken ct) =>
            ValueTask.FromResult(RandomAccess.Read(handle, buffer.Span, offset));

        public ValueTask DisposeAsync()
        {
            handle.Dispose();
            return ValueTask.CompletedTask;
        }
    }
}
