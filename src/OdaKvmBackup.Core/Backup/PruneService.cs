using OdaKvmBackup.Core.Libvirt;
using OdaKvmBackup.Core.Safety;
using OdaKvmBackup.Core.Storage;

namespace OdaKvmBackup.Core.Backup;

/// <summary>What Remove-KvmBackup removed: a backup set, or a run's retained overlays.</summary>
public sealed record RemovedBackup(string Kind, string DomainName, string RunId, string Status, string Location, string Reason)
{
    public const string BackupSetKind = "BackupSet";
    public const string RetainedOverlaysKind = "RetainedOverlays";
}

/// <summary>A run's folder of retained overlays: &lt;retention&gt;/&lt;domain&gt;/&lt;run id&gt; (or repaired-&lt;run id&gt;).</summary>
public sealed record RetainedRun(string DomainName, string Name, string Folder, DateTime TimeUtc, IReadOnlyList<string> Files);

/// <summary>
/// Remove-KvmBackup's work: applies <see cref="PrunePolicy"/> to the sets of a store and to the overlays that
/// Move-OverlayToRetention keeps, and removes what it says, checking again right before each removal.
/// </summary>
public sealed class PruneService(VirshClient virsh)
{
    /// <summary>The policy's decisions for these sets (only sets with a readable manifest take part).</summary>
    public static IReadOnlyList<(BackupSetInfo Set, PruneDecision Decision)> PlanSets(IReadOnlyList<BackupSetInfo> sets, int? keepLast, int? keepDays, DateTime nowUtc)
    {
        var byCandidate = sets.ToDictionary(s => new PruneCandidate(s.DomainName, s.RunId, s.StartedUtc, s.Status));
        return PrunePolicy.Decide(byCandidate.Keys, keepLast, keepDays, nowUtc).Select(d => (byCandidate[d.Set], d)).ToList();
    }

    /// <summary>Why a set the user named may not go: it is the newest Complete set of its domain in
    /// <paramref name="all"/> (every set of that store), or InProgress. Null when it may go.</summary>
    public static string? WhyKeptAnyway(BackupSetInfo set, IEnumerable<BackupSetInfo> all)
    {
        if (set.Status == BackupSetStatus.InProgress)
            return "InProgress: a backup may be writing it";
        var newest = all.Where(s => s.DomainName == set.DomainName && s.Status == BackupSetStatus.Complete)
            .OrderByDescending(s => s.StartedUtc).ThenByDescending(s => s.RunId, StringComparer.Ordinal).FirstOrDefault();
        return newest is not null && newest.RunId == set.RunId
            ? $"the newest Complete set of '{set.DomainName}': never removed"
            : null;
    }

    /// <summary>Deletes a set's folder, after reading its manifest again: a set that a run is writing now (its
    /// journal names it) or that changed status since it was listed is left alone.</summary>
    public static async Task RemoveSetAsync(IBackupStore store, BackupSetInfo set, CancellationToken ct)
    {
        var now = await BackupCatalog.LoadAsync(store, set.SetFolder, ct).ConfigureAwait(false);
        if (now is null)
            return; // gone already
        if (now.Status != set.Status)
            throw new BackupException(ErrorIds.BackupSetNotFound, BackupErrorCategory.InvalidOperation,
                $"The set {set.Location} changed from {set.Status} to {now.Status} since it was listed; it was not removed.",
                "Run Remove-KvmBackup again.", set.Location);
        if (RunJournal.TryLoad(set.DomainName) is { } run && run.RunId == set.RunId)
            throw RunErrors.BackupInProgress(set.DomainName);
        await store.DeleteAsync(set.SetFolder, recursive: true, ct).ConfigureAwait(false);
    }

    /// <summary>The run folders of a retention path: &lt;path&gt;/&lt;domain&gt;/&lt;run id&gt;/ (folders with other names are not
    /// the module's and are never listed).</summary>
    public static IReadOnlyList<RetainedRun> ListRetained(string retentionPath, Func<string, bool>? domainFilter)
    {
        var runs = new List<RetainedRun>();
        foreach (var domain in new DirectoryInfo(retentionPath).EnumerateDirectories())
        {
            if (domain.LinkTarget is not null || domainFilter?.Invoke(domain.Name) == false)
                continue;
            foreach (var run in domain.EnumerateDirectories())
            {
                if (run.LinkTarget is not null || !BackupNames.TryParseRetentionFolder(run.Name, out var time))
                    continue;
                runs.Add(new RetainedRun(domain.Name, run.Name, run.FullName, time,
                    run.EnumerateFileSystemInfos().Select(f => f.FullName).Order(StringComparer.Ordinal).ToList()));
            }
        }
        return runs;
    }

    /// <summary>Deletes a run's retained overlays, once no domain has any of them in a backing chain.</summary>
    public async Task RemoveRetainedAsync(RetainedRun run, CancellationToken ct)
    {
        var inUse = await HostPaths.ChainFilesOfAllDomainsAsync(virsh, ct).ConfigureAwait(false);
        if (run.Files.FirstOrDefault(f => inUse.Contains(HostPaths.Real(f))) is { } used)
            throw new BackupException(ErrorIds.OverlayInUse, BackupErrorCategory.ResourceBusy,
                $"'{used}' is in the backing chain of a domain on this host; '{run.Folder}' was not removed.",
                "Find the domain with 'virsh domblklist <domain> --details'; commit it (Repair-KvmBackup) before removing the overlays.", run.DomainName);
        try
        {
            Directory.Delete(run.Folder, recursive: true);
            PrivateFiles.FsyncDirectory(Path.GetDirectoryName(run.Folder)!);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw StoreErrors.FromIOException(ex, run.Folder);
        }
    }
}
