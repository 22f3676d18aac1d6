using OdaKvmBackup.Core.Storage;

namespace OdaKvmBackup.Core.Tests.Support;

/// <summary>
/// A LocalBackupStore with seams for what a test cannot arrange on a real file system: the free space it reports,
/// what happens to a file between its write and its verification, and when renames happen.
/// </summary>
internal sealed class InterceptingStore(string root) : IBackupStore
{
    public LocalBackupStore Inner { get; } = new(root);

    /// <summary>The free space to report instead of the real one.</summary>
    public long? FreeBytes { get; set; }

    /// <summary>Wraps the writer of each file the store creates (relative path, real writer).</summary>
    public Func<string, IStoreFileWriter, IStoreFileWriter>? WrapWriter { get; set; }

    /// <summary>Runs before each rename (from, to), e.g. to hold one back until something else happened.</summary>
    public Func<string, string, Task>? BeforeRename { get; set; }

    public string Location => Inner.Location;
    public bool IsRemote => false;
    public string Describe(string relativePath) => Inner.Describe(relativePath);
    public Task CheckWritableAsync(CancellationToken ct) => Inner.CheckWritableAsync(ct);
    public Task<long> GetFreeBytesAsync(CancellationToken ct) => FreeBytes is { } free ? Task.FromResult(free) : Inner.GetFreeBytesAsync(ct);
    public Task<StoreEntry?> GetEntryAsync(string relativePath, CancellationToken ct) => Inner.GetEntryAsync(relativePath, ct);
    public Task<IReadOnlyList<StoreEntry>> ListAsync(string relativeFolder, CancellationToken ct) => Inner.ListAsync(relativeFolder, ct);
    public Task CreateFolderAsync(string relativePath, CancellationToken ct) => Inner.CreateFolderAsync(relativePath, ct);
    public Task WriteSmallFileAsync(string relativePath, byte[] content, CancellationToken ct) => Inner.WriteSmallFileAsync(relativePath, content, ct);
    public Task<byte[]> ReadSmallFileAsync(string relativePath, CancellationToken ct) => Inner.ReadSmallFileAsync(relativePath, ct);

    public async Task<IStoreFileWriter> CreateFileAsync(string relativePath, CancellationToken ct)
    {
        var writer = await Inner.CreateFileAsync(relativePath, ct);
        return WrapWriter is null ? writer : WrapWriter(relativePath, writer);
    }

    public Task<IStoreFileReader> OpenReadAsync(string relativePath, CancellationToken ct) => Inner.OpenReadAsync(relativePath, ct);

    public async Task RenameAsync(string from, string to, CancellationToken ct)
    {
        if (BeforeRename is not null)
            await BeforeRename(from, to);
        await Inner.RenameAsync(from, to, ct);
    }

    public Task DeleteAsync(string relativePath, bool recursive, CancellationToken ct) => Inner.DeleteAsync(relativePath, recursive, ct);

    public Task<IReadOnlyList<string>> SegmentDigestsAsync(string relativePath, long segmentSize, IReadOnlyList<long> segmentIndexes, CancellationToken ct) =>
        Inner.SegmentDigestsAsync(relativePath, segmentSize, segmentIndexes, ct);

    public ValueTask DisposeAsync() => Inner.DisposeAsync();
}

/// <summary>A writer that passes everything on, then runs <paramref name="afterComplete"/> once the file is complete.</summary>
internal sealed class AfterCompleteWriter(IStoreFileWriter inner, Action afterComplete) : IStoreFileWriter
{
    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken ct) => inner.WriteAsync(offset, data, ct);

    public async Task CompleteAsync(long size, CancellationToken ct)
    {
        await inner.CompleteAsync(size, ct);
        afterComplete();
    }

    public ValueTask DisposeAsync() => inner.DisposeAsync();
}

/// <summary>A writer whose writes fail as <paramref name="write"/> makes them fail.</summary>
internal sealed class FailingWriter(IStoreFileWriter inner, Action write) : IStoreFileWriter
{
    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        write();
        return inner.WriteAsync(offset, data, ct);
    }

    public Task CompleteAsync(long size, CancellationToken ct) => inner.CompleteAsync(size, ct);

    public ValueTask DisposeAsync() => inner.DisposeAsync();
}
