namespace OdaKvmBackup.Core.RunState;

/// <summary>What the preflight of one domain knows when each step checks its own part.</summary>
internal sealed class PreflightContext
{
    private readonly QemuImgClient _qemuImg;
    private readonly Dictionary<string, Task<ImageInfo>> _imageInfo = new(StringComparer.Ordinal);

    public PreflightContext(QemuImgClient qemuImg) => _qemuImg = qemuImg;

    public required string DomainName { get; init; }
    public required string RunId { get; init; }
    public required bool Cold { get; init; }
    /// <summary>The domain as it runs now (or its definition, when shut off).</summary>
    public required DomainDescription Live { get; init; }
    /// <summary>The disks the run would back up, with the names decided for them.</summary>
    public required IReadOnlyList<DiskRecord> Disks { get; init; }
    /// <summary>Problems that stop the backup: each names the cause and the fix. Nothing is changed when there is one.</summary>
    public List<BackupException> Problems { get; } = new();
    /// <summary>What the user should know, but that does not stop the backup.</summary>
    public List<string> Warnings { get; } = new();

    /// <summary>The folders holding the disks' own files.</summary>
    public IEnumerable<string> DiskFolders => Disks.Select(d => Path.GetDirectoryName(d.Source)!).Distinct(StringComparer.Ordinal);

    public void Problem(string id, BackupErrorCategory category, string message, string fix) =>
        Problems.Add(new BackupException(id, category, message, fix, DomainName));

    /// <summary>qemu-img info of a disk, read once per preflight (the checks may ask for it at the same time).</summary>
    public Task<ImageInfo> ImageInfoAsync(string path, CancellationToken ct)
    {
        lock (_imageInfo)
        {
            if (!_imageInfo.TryGetValue(path, out var info))
                _imageInfo[path] = info = _qemuImg.InfoAsync(path, ct);
            return info;
        }
    }

    /// <summary>qemu-img info of a disk if a check asked for it and got it; null otherwise (never runs qemu-img).</summary>
    public ImageInfo? KnownImageInfo(string path)
    {
        lock (_imageInfo)
            return _imageInfo.TryGetValue(path, out var info) && info.IsCompletedSuccessfully ? info.Result : null;
    }
}

/// <summary>A step's own checks, run by New-KvmDiskSnapshot before any snapshot: Copy-VmDisk and
/// Move-OverlayToRetention contribute theirs when they are later in the same pipeline.</summary>
internal interface IPreflightCheck
{
    Task CheckAsync(PreflightContext context, CancellationToken ct);

    /// <summary>True when a run id cannot be used for this domain (a set of that name exists): the snapshot then
    /// waits for the next second rather than collide.</summary>
    Task<bool> IsRunIdTakenAsync(string domain, string runId, CancellationToken ct) => Task.FromResult(false);
}
