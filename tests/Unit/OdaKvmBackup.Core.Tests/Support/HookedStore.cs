namespace OdaKvmBackup.Core.Tests.Support;

/// <summary>Any store (an SSH one too), its writers wrapped: what the storage does to a file between its write
/// and its read-back check, a test arranges here.</summary>
internal sealed class HookedStore(IBackupStore inner, Func<string, IStoreFileWriter, IStoreFileWriter> wrapWriter) : IBackupStore
{
    public string Location => inner.Location;
    public bool IsRemote => inner.IsRemote;
    public string Describe(string relativePath) => inner.Describe(relativePath);
    public Task CheckWritableAsync(CancellationToken ct) => inner.CheckWritableAsync(ct);
    public Task<long> GetFreeBytesAsync(CancellationToken ct) => inner.GetFreeBytesAsync(ct);
    public Task<StoreEntry?> GetEntryAsync(string relativePath, CancellationToken ct) => inner.GetEntryAsync(relativePath, ct);
    public Task<IReadOnlyList<StoreEntry>> ListAsync(string relativeFolder, CancellationToken ct) => inner.ListAsync(relativeFolder, ct);
    public Task CreateFolderAsync(string relativePath, CancellationToken ct) => inner.CreateFolderAsync(relativePath, ct);
    public Task WriteSmallFileAsync(string relativePath, byte[] content, CancellationToken ct) => inner.WriteSmallFileAsync(relativePath, content, ct);
    public Task<byte[]> ReadSmallFileAsync(string relativePath, CancellationToken ct) => inner.ReadSmallFileAsync(relativePath, ct);
    public async Task<IStoreFileWriter> CreateFileAsync(string relativePath, CancellationToken ct) => wrapWriter(relativePath, await inner.CreateFileAsync(relativePath, ct));
    public Task<CloneResult> CloneFileAsync(string baseRelative, string newRelative, CancellationToken ct) => inner.CloneFileAsync(baseRelative, newRelative, ct);
    public async Task<IStoreFileWriter> OpenForWriteAsync(string relativePath, CancellationToken ct) => wrapWriter(relativePath, await inner.OpenForWriteAsync(relativePath, ct));
    public Task<IStoreFileReader> OpenReadAsync(string relativePath, CancellationToken ct) => inner.OpenReadAsync(relativePath, ct);
    public Task RenameAsync(string from, string to, CancellationToken ct) => inner.RenameAsync(from, to, ct);
    public Task DeleteAsync(string relativePath, bool recursive, CancellationToken ct) => inner.DeleteAsync(relativePath, recursive, ct);
    public async Task<IReadOnlyList<string>> SegmentDigestsAsync(string relativePath, long segmentSize, IReadOnlyList<long> segmentIndexes, CancellationToken ct)
    {
        await BeforeReadBack(relativePath, ct);
        return await inner.SegmentDigestsAsync(relativePath, segmentSize, segmentIndexes, ct);
    }

    public string? DigestTool => inner.DigestTool;

    public async Task<IReadOnlyList<long>> FindNonZeroAsync(string relativePath, IReadOnlyList<(long Offset, long Length)> ranges, CancellationToken ct)
    {
        await BeforeReadBack(relativePath, ct);
        return await inner.FindNonZeroAsync(relativePath, ranges, ct);
    }

    /// <summary>Runs before a read-back where the file lies (segment digests, zero check): may wait, or throw.</summary>
    public Func<string, CancellationToken, Task> BeforeReadBack { get; init; } = (_, _) => Task.CompletedTask;

    public Task<StoreOwnership?> GetOwnershipAsync(string relativePath, CancellationToken ct) => inner.GetOwnershipAsync(relativePath, ct);

    public Task<uint> GetWriterIdAsync(CancellationToken ct) => inner.GetWriterIdAsync(ct);

    public ValueTask DisposeAsync() => inner.DisposeAsync();
}
