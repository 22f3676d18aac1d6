namespace OdaKvmBackup.Core.Stores;

/// <summary>
/// Where backup sets are written and read: a local folder (or an NFS mount) or a folder on an SSH server. Paths
/// given to a store are relative to its root, with '/' separators ("linux_vm/20261128-101500/backup.json").
/// Everything a store creates is private to its owner: folders 0700 and files 0600, whatever the umask.
/// Failures are <see cref="BackupException"/>s that name the cause and the fix.
/// </summary>
internal interface IBackupStore : IAsyncDisposable
{
    /// <summary>The root as the user should read it: "/backup" or "root@server:/backup".</summary>
    string Location { get; }

    bool IsRemote { get; }

    /// <summary>The full name of an entry, for messages and output objects ("/backup/vm/run/disk" or
    /// "root@server:/backup/vm/run/disk").</summary>
    string Describe(string relativePath);

    /// <summary>Checks that the root exists, is a folder and can be written, by creating a file with a new random
    /// name (create-new: never follows or overwrites what is there) and deleting it. Throws PathNotFound,
    /// PathNotWritable, or the SSH errors (unknown/changed host key, authentication, unreachable host).</summary>
    Task CheckWritableAsync(CancellationToken ct);

    /// <summary>Bytes an unprivileged writer may still use under the root.</summary>
    Task<long> GetFreeBytesAsync(CancellationToken ct);

    /// <summary>The entry, or null when nothing is there.</summary>
    Task<StoreEntry?> GetEntryAsync(string relativePath, CancellationToken ct);

    /// <summary>The children of a folder (not recursive); empty when the folder does not exist.</summary>
    Task<IReadOnlyList<StoreEntry>> ListAsync(string relativeFolder, CancellationToken ct);

    /// <summary>Creates a folder and its missing parents, each 0700.</summary>
    Task CreateFolderAsync(string relativePath, CancellationToken ct);

    /// <summary>Writes a small file (a manifest, a domain XML) so that a crash leaves either the old or the new
    /// content: temporary file, fsync, rename over the target, fsync of the folder. The file is 0600.</summary>
    Task WriteSmallFileAsync(string relativePath, byte[] content, CancellationToken ct);

    /// <summary>Reads a small file whole. Throws PathNotFound when it is not there.</summary>
    Task<byte[]> ReadSmallFileAsync(string relativePath, CancellationToken ct);

    /// <summary>Creates (or truncates) a file 0600 for writing at offsets; what is never written stays a hole.</summary>
    Task<IStoreFileWriter> CreateFileAsync(string relativePath, CancellationToken ct);

    /// <summary>
    /// Makes <paramref name="newRelative"/> (nothing may be there yet) a copy of <paramref name="baseRelative"/> made
    /// where the files lie, never through this host: a clone sharing the base's blocks where the file system can
    /// (FICLONE locally, <c>cp --reflink=always</c> on an SSH server: XFS with reflink, btrfs, NFS 4.2), else a sparse
    /// copy on the destination itself (<see cref="FileClone.LocalCopy"/>). The base is only ever read. The new file is
    /// 0600 and not fsynced (whoever writes into it next fsyncs it). Nothing is left at <paramref name="newRelative"/>
    /// when it fails. Issue 15: the next set's copy starts as the previous set's.
    /// </summary>
    Task<CloneResult> CloneFileAsync(string baseRelative, string newRelative, CancellationToken ct) =>
        throw new NotSupportedException($"{GetType().Name} cannot clone files.");

    /// <summary>Opens an existing file (a clone made by <see cref="CloneFileAsync"/>) for writing at offsets without
    /// truncating it: what is never written keeps what the file held. <see cref="IStoreFileWriter.CompleteAsync"/>
    /// sets its size and fsyncs it.</summary>
    Task<IStoreFileWriter> OpenForWriteAsync(string relativePath, CancellationToken ct) =>
        throw new NotSupportedException($"{GetType().Name} cannot write into an existing file.");

    /// <summary>Opens a file for reading at offsets.</summary>
    Task<IStoreFileReader> OpenReadAsync(string relativePath, CancellationToken ct);

    /// <summary>Renames a file or folder, replacing a file at <paramref name="to"/> atomically, then syncs the folder.</summary>
    Task RenameAsync(string from, string to, CancellationToken ct);

    /// <summary>Deletes a file, or a folder (with what it holds when <paramref name="recursive"/>). Nothing there is fine.</summary>
    Task DeleteAsync(string relativePath, bool recursive, CancellationToken ct);

    /// <summary>
    /// Reads a stored file back where it is stored (for an SSH store: on the server, never over the network) and
    /// returns the lower-case hex SHA-256 of each asked segment: bytes [index * segmentSize, (index + 1) * segmentSize)
    /// of the file, holes read as zeros, the last segment possibly shorter. Local stores drop the file's pages from
    /// the cache first, so what is read is what the storage holds.
    /// </summary>
    Task<IReadOnlyList<string>> SegmentDigestsAsync(string relativePath, long segmentSize, IReadOnlyList<long> segmentIndexes,
        CancellationToken ct);

    /// <summary>What computed the latest <see cref="SegmentDigestsAsync"/> where the file lies, for messages: on an
    /// SSH server the tool it ran ("python3", "openssl", "sha256sum"...); null for a local store (.NET here) or
    /// before the first.</summary>
    string? DigestTool => null;

    /// <summary>
    /// Reads byte ranges of a stored file back where it is stored (for an SSH store: on the server, with cmp against
    /// /dev/zero, never over the network) and returns, for each range that holds a non-zero byte, the offset of its
    /// first one; empty when every range reads as zeros (holes do). How the segments of a copy that held only zeros,
    /// which have no digest, are checked.
    /// </summary>
    Task<IReadOnlyList<long>> FindNonZeroAsync(string relativePath, IReadOnlyList<(long Offset, long Length)> ranges, CancellationToken ct);

    /// <summary>Who owns an entry and its mode, the entry itself (a symbolic link is not followed); null when
    /// nothing is there.</summary>
    Task<StoreOwnership?> GetOwnershipAsync(string relativePath, CancellationToken ct);

    /// <summary>The user id the store's files are written as: this process's on a local store (root), the SSH
    /// login's on a server.</summary>
    Task<uint> GetWriterIdAsync(CancellationToken ct);
}

/// <summary>One entry of a store folder.</summary>
internal sealed record StoreEntry(string Name, bool IsFolder, long Size, DateTime ModifiedUtc, UnixFileMode Mode);

/// <summary>Who owns an entry of a store and how it may be written. <paramref name="Path"/> is the path on the
/// machine that holds it (this host, or the SSH server), for the commands that fix it.</summary>
internal sealed record StoreOwnership(string Path, uint OwnerId, UnixFileMode Mode, bool IsFolder, bool IsSymbolicLink);

/// <summary>A file being written at offsets.</summary>
internal interface IStoreFileWriter : IAsyncDisposable
{
    /// <summary>Writes <paramref name="data"/> at <paramref name="offset"/>. The data is copied (or written) before
    /// this returns, so the caller may reuse its buffer; the write may complete later (pipelined), and its failure
    /// then surfaces on a later call or in <see cref="CompleteAsync"/>. An SSH writer that loses its connection
    /// reconnects (bounded, with back-off) and sends again what the server had not acknowledged.</summary>
    ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken ct);

    /// <summary>Waits for every write, sets the file's size (the tail may be a hole), and makes it durable (fsync).</summary>
    Task CompleteAsync(long size, CancellationToken ct);
}

/// <summary>A stored file being read at offsets.</summary>
internal interface IStoreFileReader : IAsyncDisposable
{
    long Size { get; }

    /// <summary>Reads up to <paramref name="buffer"/>.Length bytes at <paramref name="offset"/>; 0 at the end. Reads
    /// that follow one another are the common case: an SSH reader fetches ahead (several requests in flight) so
    /// that a sequential read runs at the speed of the link, not of its round trips.</summary>
    ValueTask<int> ReadAsync(long offset, Memory<byte> buffer, CancellationToken ct);
}
