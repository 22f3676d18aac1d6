namespace OdaKvmBackup.WayBack.Tests.Support;

/// <summary>Writes backup sets as Copy-VmDisk leaves them: disk copies, domain.xml and backup.json with real
/// content digests.</summary>
internal static class Sets
{
    public const long DiskSize = 3L << 20;

    /// <summary>A set of <paramref name="domain"/> with a qcow2-named vda and a raw vdb (random data between holes).</summary>
    public static async Task<BackupSetInfo> WriteAsync(IBackupStore store, string root, string domain, DateTime startedUtc,
        BackupSetStatus status = BackupSetStatus.Complete, long segmentSize = 0, string? sourceFolder = null)
    {
        var runId = BackupNames.RunId(startedUtc);
        var folder = BackupNames.SetFolder(domain, runId);
        var full = Path.Combine(root, domain, runId);
        Directory.CreateDirectory(full);
        var disks = new List<ManifestDisk>();
        foreach (var (target, file, format) in new[] { ("vda", "boot", "qcow2"), ("vdb", "data", "raw") })
        {
            var path = Path.Combine(full, file);
            await using (var stream = File.Create(path))
            {
                stream.SetLength(DiskSize);
                var data = new byte[64 * 1024];
                Random.Shared.NextBytes(data);
                stream.Position = 1 << 20;
                await stream.WriteAsync(data);
            }
            var digest = await SparseCopy.DigestAsync(path, null, CancellationToken.None);
            var disk = new ManifestDisk
            {
                Target = target, Source = Path.Combine(sourceFolder ?? "/vms/" + domain, file), Format = format, File = file,
                SizeBytes = digest.SizeBytes, DataBytes = digest.DataBytes, ContentDigest = digest.ContentDigest, Verified = true,
            };
            if (segmentSize > 0)
            {
                var local = new LocalBackupStore(root);
                var count = (DiskSize + segmentSize - 1) / segmentSize;
                disk.SegmentSize = segmentSize;
                var indexes = Enumerable.Range(0, (int)count).Select(i => (long)i).ToList();
                var digests = await local.SegmentDigestsAsync(folder + "/" + file, segmentSize, indexes, CancellationToken.None);
                disk.SegmentDigests = new SortedDictionary<long, string>(indexes.Zip(digests).ToDictionary(p => p.First, p => p.Second));
            }
            disks.Add(disk);
        }
        File.WriteAllText(Path.Combine(full, BackupNames.DomainXmlFileName), Xmls.Domain(domain, disks[0].Source, disks[1].Source));
        var manifest = new BackupManifest
        {
            Format = CheckedManifest.EarlierFormat, DomainName = domain, RunId = runId, Status = status, Consistency = BackupConsistency.Quiesced,
            SnapshotName = BackupNames.DefaultSnapshotName, StartedUtc = startedUtc, Disks = disks,
        };
        await BackupSet.SaveAsync(new LocalBackupStore(root), folder, manifest, CancellationToken.None);
        return (await BackupCatalog.LoadAsync(store, folder, CancellationToken.None))!;
    }

    /// <summary>
    /// A set of format OdaKvmBackup/3 (issue 15) as a run writes it: a qcow2-named vda ("boot") and a raw vdb ("data")
    /// of <paramref name="size"/> bytes, random data at 1 MiB (or what <paramref name="fill"/> writes), each with its
    /// digest list "&lt;file&gt;.digests" taken of the copy as stored and its SHA-256 as the manifest's Digests.
    /// <paramref name="edit"/> may change the manifest before it is saved (to forge it). Returns the set folder.
    /// </summary>
    public static async Task<string> WriteV3Async(string root, string domain, DateTime startedUtc,
        BackupSetStatus status = BackupSetStatus.Complete, long size = DiskSize, Action<string, FileStream>? fill = null,
        Action<BackupManifest>? edit = null, string? basedOn = null, string? sourceFolder = null)
    {
        var runId = BackupNames.RunId(startedUtc);
        var folder = BackupNames.SetFolder(domain, runId);
        var full = Path.Combine(root, domain, runId);
        Directory.CreateDirectory(full);
        var disks = new List<ManifestDisk>();
        foreach (var (target, file, format) in new[] { ("vda", "boot", "qcow2"), ("vdb", "data", "raw") })
        {
            var path = Path.Combine(full, file);
            await using (var stream = File.Create(path))
            {
                stream.SetLength(size);
                if (fill is not null)
                {
                    fill(target, stream);
                }
                else
                {
                    var data = new byte[64 * 1024];
                    Random.Shared.NextBytes(data);
                    stream.Position = Math.Min(1 << 20, size - data.Length);
                    await stream.WriteAsync(data);
                }
            }
            var list = await SparseCopy.DigestListAsync(path, null, CancellationToken.None);
            await File.WriteAllBytesAsync(path + BackupNames.DigestListSuffix, list.Bytes.ToArray());
            disks.Add(new ManifestDisk
            {
                Target = target, Source = Path.Combine(sourceFolder ?? "/vms/" + domain, file), Format = format, File = file, SizeBytes = size, DataBytes = 64 * 1024,
                Digests = list.Sha256, StoredAs = basedOn is null ? "full" : "reflink", BasedOn = basedOn,
                FullBecause = basedOn is null ? "no earlier Complete set of " + domain + " at this destination" : null,
                BytesRead = size, BytesSent = 64 * 1024, BytesCloned = basedOn is null ? 0 : size - 64 * 1024, BytesResent = 0,
                Verified = status == BackupSetStatus.Complete, VerifiedBy = "segment digests read back",
            });
        }
        File.WriteAllText(Path.Combine(full, BackupNames.DomainXmlFileName), Xmls.Domain(domain, disks[0].Source, disks[1].Source));
        var manifest = new BackupManifest
        {
            DomainName = domain, RunId = runId, Status = status, Consistency = BackupConsistency.Quiesced,
            SnapshotName = BackupNames.DefaultSnapshotName, StartedUtc = startedUtc, Disks = disks,
        };
        edit?.Invoke(manifest);
        await BackupSet.SaveAsync(new LocalBackupStore(root), folder, manifest, CancellationToken.None);
        return folder;
    }

    /// <summary>Changes one byte of a file in place.</summary>
    public static void FlipByte(string path, long offset)
    {
        using var stream = File.Open(path, FileMode.Open, FileAccess.ReadWrite);
        stream.Position = offset;
        var b = stream.ReadByte();
        stream.Position = offset;
        stream.WriteByte((byte)(b ^ 0x01));
    }
}

/// <summary>
/// A store that says it is remote (as the SSH store will), over a local folder: it counts what it is asked, so a
/// test can see that a remote set is checked with segment digests computed where it lies, not read over the
/// network.
/// </summary>
internal class FakeRemoteStore(string root) : IBackupStore
{
    private readonly LocalBackupStore _local = new(root);
    public int SegmentDigestCalls;
    public int OpenReadCalls;
    /// <summary>What was opened for reading (over the network, for a real server), in order.</summary>
    public List<string> Opened { get; } = new();

    public string Location => "root@backup-server:" + root;
    public bool IsRemote => true;
    public string Describe(string relativePath) => "root@backup-server:" + _local.Describe(relativePath);
    public Task CheckWritableAsync(CancellationToken ct) => _local.CheckWritableAsync(ct);
    public Task<long> GetFreeBytesAsync(CancellationToken ct) => _local.GetFreeBytesAsync(ct);
    public Task<StoreEntry?> GetEntryAsync(string relativePath, CancellationToken ct) => _local.GetEntryAsync(relativePath, ct);
    public Task<IReadOnlyList<StoreEntry>> ListAsync(string relativeFolder, CancellationToken ct) => _local.ListAsync(relativeFolder, ct);
    public Task CreateFolderAsync(string relativePath, CancellationToken ct) => _local.CreateFolderAsync(relativePath, ct);
    public Task WriteSmallFileAsync(string relativePath, byte[] content, CancellationToken ct) => _local.WriteSmallFileAsync(relativePath, content, ct);
    public Task<byte[]> ReadSmallFileAsync(string relativePath, CancellationToken ct) => _local.ReadSmallFileAsync(relativePath, ct);
    public Task<IStoreFileWriter> CreateFileAsync(string relativePath, CancellationToken ct) => _local.CreateFileAsync(relativePath, ct);
    public Task<CloneResult> CloneFileAsync(string baseRelative, string newRelative, CancellationToken ct) => _local.CloneFileAsync(baseRelative, newRelative, ct);
    public Task<IStoreFileWriter> OpenForWriteAsync(string relativePath, CancellationToken ct) => _local.OpenForWriteAsync(relativePath, ct);
    public Task RenameAsync(string from, string to, CancellationToken ct) => _local.RenameAsync(from, to, ct);
    public Task DeleteAsync(string relativePath, bool recursive, CancellationToken ct) => _local.DeleteAsync(relativePath, recursive, ct);
    public Task<IReadOnlyList<long>> FindNonZeroAsync(string relativePath, IReadOnlyList<(long Offset, long Length)> ranges, CancellationToken ct) =>
        _local.FindNonZeroAsync(relativePath, ranges, ct);
    public Task<StoreOwnership?> GetOwnershipAsync(string relativePath, CancellationToken ct) => _local.GetOwnershipAsync(relativePath, ct);
    public Task<uint> GetWriterIdAsync(CancellationToken ct) => _local.GetWriterIdAsync(ct);
    public ValueTask DisposeAsync() => ValueTask.CompletedTask;

    public Task<IStoreFileReader> OpenReadAsync(string relativePath, CancellationToken ct)
    {
        Interlocked.Increment(ref OpenReadCalls);
        lock (Opened)
            Opened.Add(relativePath);
        return _local.OpenReadAsync(relativePath, ct);
    }

    public Task<IReadOnlyList<string>> SegmentDigestsAsync(string relativePath, long segmentSize, IReadOnlyList<long> segmentIndexes, CancellationToken ct)
    {
        Interlocked.Increment(ref SegmentDigestCalls);
        return _local.SegmentDigestsAsync(relativePath, segmentSize, segmentIndexes, ct);
    }
}

/// <summary>A remote store that can also run qemu-img check on the server.</summary>
internal sealed class FakeCheckingRemoteStore(string root, string? problem) : FakeRemoteStore(root), IImageCheckingStore
{
    public List<string> Checked { get; } = new();

    public Task<string?> CheckImageAsync(string relativePath, string format, CancellationToken ct)
    {
        Checked.Add(relativePath);
        return Task.FromResult(problem);
    }
}
