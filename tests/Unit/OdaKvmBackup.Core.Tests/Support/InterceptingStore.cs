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

    /// <summary>Answers each call that changes the store (folders, small files) only after this delay, as a store
    /// across a network (an SSH server) does: the server has done the work, its answer is on its way, and another
    /// caller can look meanwhile.</summary>
    public TimeSpan? Latency { get; set; }

    /// <summary>Runs before each small file (a manifest, the domain XML) is written (relative path, content).</summary>
    public Func<string, byte[], Task>? BeforeWriteSmallFile { get; set; }

    /// <summary>Runs before each folder is created (relative path).</summary>
    public Func<string, Task>? BeforeCreateFolder { get; set; }

    /// <summary>Runs after each rename (from, to) and before the caller goes on.</summary>
    public Func<string, string, Task>? AfterRename { get; set; }

    public string Location => Inner.Location;
    public bool IsRemote => false;
    public string Describe(string relativePath) => Inner.Describe(relativePath);
    public Task CheckWritableAsync(CancellationToken ct) => Inner.CheckWritableAsync(ct);
    public Task<long> GetFreeBytesAsync(CancellationToken ct) => FreeBytes is { } free ? Task.FromResult(free) : Inner.GetFreeBytesAsync(ct);

    public Task<StoreEntry?> GetEntryAsync(string relativePath, CancellationToken ct) => Inner.GetEntryAsync(relativePath, ct);

    /// <summary>Runs before each folder is listed (relative path), e.g. to throw as a server that does not answer.</summary>
    public Func<string, Task>? BeforeList { get; set; }

    public async Task<IReadOnlyList<StoreEntry>> ListAsync(string relativeFolder, CancellationToken ct)
    {
        if (BeforeList is not null)
            await BeforeList(relativeFolder);
        return await Inner.ListAsync(relativeFolder, ct);
    }

    public async Task CreateFolderAsync(string relativePath, CancellationToken ct)
    {
        if (BeforeCreateFolder is not null)
            await BeforeCreateFolder(relativePath);
        await Inner.CreateFolderAsync(relativePath, ct);
        await RoundTrip(ct);
    }

    public async Task WriteSmallFileAsync(string relativePath, byte[] content, CancellationToken ct)
    {
        if (BeforeWriteSmallFile is not null)
            await BeforeWriteSmallFile(relativePath, content);
        await Inner.WriteSmallFileAsync(relativePath, content, ct);
        await RoundTrip(ct);
    }

    /// <summary>The server has done the work; its answer is still on its way.</summary>
    private Task RoundTrip(CancellationToken ct) => Latency is { } latency ? Task.Delay(latency, ct) : Task.CompletedTask;

    public Task<byte[]> ReadSmallFileAsync(string relativePath, CancellationToken ct) => Inner.ReadSmallFileAsync(relativePath, ct);

    public async Task<IStoreFileWriter> CreateFileAsync(string relativePath, CancellationToken ct)
    {
        var writer = await Inner.CreateFileAsync(relativePath, ct);
        return WrapWriter is null ? writer : WrapWriter(relativePath, writer);
    }

    /// <summary>Runs before each clone (base, new), e.g. to look at the journal then.</summary>
    public Action<string, string>? BeforeClone { get; set; }

    /// <summary>Awaited before each clone is made, e.g. to hold it back as a slow server would.</summary>
    public Func<Task>? CloneDelay { get; set; }

    public async Task<CloneResult> CloneFileAsync(string baseRelative, string newRelative, CancellationToken ct)
    {
        BeforeClone?.Invoke(baseRelative, newRelative);
        if (CloneDelay is not null)
            await CloneDelay();
        return await Inner.CloneFileAsync(baseRelative, newRelative, ct);
    }

    /// <summary>Wrapped by <see cref="WrapWriter"/> as a created file's writer is.</summary>
    public async Task<IStoreFileWriter> OpenForWriteAsync(string relativePath, CancellationToken ct)
    {
        var writer = await Inner.OpenForWriteAsync(relativePath, ct);
        return WrapWriter is null ? writer : WrapWriter(relativePath, writer);
    }

    public Task<IStoreFileReader> OpenReadAsync(string relativePath, CancellationToken ct) => Inner.OpenReadAsync(relativePath, ct);

    public async Task RenameAsync(string from, string to, CancellationToken ct)
    {
        if (BeforeRename is not null)
            await BeforeRename(from, to);
        await Inner.RenameAsync(from, to, ct);
        if (AfterRename is not null)
            await AfterRename(from, to);
    }

    public Task DeleteAsync(string relativePath, bool recursive, CancellationToken ct) => Inner.DeleteAsync(relativePath, recursive, ct);

    public Task<IReadOnlyList<string>> SegmentDigestsAsync(string relativePath, long segmentSize, IReadOnlyList<long> segmentIndexes, CancellationToken ct) =>
        Inner.SegmentDigestsAsync(relativePath, segmentSize, segmentIndexes, ct);

    public Task<IReadOnlyList<long>> FindNonZeroAsync(string relativePath, IReadOnlyList<(long Offset, long Length)> ranges, CancellationToken ct) =>
        Inner.FindNonZeroAsync(relativePath, ranges, ct);

    public Task<StoreOwnership?> GetOwnershipAsync(string relativePath, CancellationToken ct) => Inner.GetOwnershipAsync(relativePath, ct);

    public Task<uint> GetWriterIdAsync(CancellationToken ct) => Inner.GetWriterIdAsync(ct);

    public ValueTask DisposeAsync() => Inner.DisposeAsync();
}

/// <summary>A writer that passes everything on, then runs <paramref name="afterClose"/> once the file is written,
/// synced and closed: what the storage does to it from then on, the read-back check must see.</summary>
internal sealed class AfterCloseWriter(IStoreFileWriter inner, Action afterClose) : IStoreFileWriter
{
    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken ct) => inner.WriteAsync(offset, data, ct);

    public Task CompleteAsync(long size, CancellationToken ct) => inner.CompleteAsync(size, ct);

    public async ValueTask DisposeAsync()
    {
        await inner.DisposeAsync();
        afterClose();
    }
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

/// <summary>A writer whose first write waits until the copy is stopped (a copy still running when Ctrl+C comes).</summary>
internal sealed class StuckWriter(IStoreFileWriter inner) : IStoreFileWriter
{
    public async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        await Task.Delay(TimeSpan.FromSeconds(30), ct);
        await inner.WriteAsync(offset, data, ct);
    }

    public Task CompleteAsync(long size, CancellationToken ct) => inner.CompleteAsync(size, ct);

    public ValueTask DisposeAsync() => inner.DisposeAsync();
}
