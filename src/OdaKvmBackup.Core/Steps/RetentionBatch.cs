namespace OdaKvmBackup.Core.Steps;

/// <summary>Move-OverlayToRetention's moves into one retention folder. The other domains' chains are read once per
/// domain of the batch: only the owning domain can normally hold an overlay, and it is read afresh for every move.</summary>
internal sealed class RetentionBatch(RetentionService service, string retentionPath)
{
    private readonly Dictionary<string, IReadOnlySet<string>> _otherChains = new(StringComparer.Ordinal);

    public string RetentionPath => retentionPath;

    /// <summary>Where a disk's overlay goes: &lt;path&gt;/&lt;domain&gt;/&lt;run&gt;/&lt;its retained name&gt;.</summary>
    public string RetainedPath(RunRecord run, DiskRecord disk) =>
        BackupNames.RetainedPath(retentionPath, BackupNames.RetentionFolder(run.DomainName, run.RunId), disk.RetainedName!);

    /// <summary>Moves the overlay (see <see cref="RetentionService.MoveAsync"/>); returns where it lies now.</summary>
    public async Task<string> MoveAsync(RunRecord run, DiskRecord disk, CancellationToken ct)
    {
        if (!_otherChains.TryGetValue(run.DomainName, out var others))
            _otherChains[run.DomainName] = others = await service.FilesInChainsOfOtherDomainsAsync(run.DomainName, ct).ConfigureAwait(false);
        return await service.MoveAsync(run.DomainName, disk.Overlay!, retentionPath, BackupNames.RetentionFolder(run.DomainName, run.RunId), disk.RetainedName!, ct, others).ConfigureAwait(false);
    }
}
