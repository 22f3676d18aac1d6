using OdaKvmBackup.Core.Libvirt;

namespace OdaKvmBackup.Core.Backup;

/// <summary>Step 3: copies each frozen file into the run's backup set and verifies the copy.</summary>
public sealed class CopyService
{
    private readonly VirshClient _virsh;

    public CopyService(VirshClient virsh) => _virsh = virsh;

    /// <summary>Copies one disk. On any failure the set is marked Incomplete before the error is thrown.</summary>
    public async Task CopyAsync(VmDiskBackup disk, string destination, bool force, int bandwidthMiBps,
        Action<long, long>? progress, CancellationToken ct)
    {
        var run = disk.Run ?? throw new BackupException(ErrorIds.NotFromThisSession, BackupErrorCategory.InvalidArgument,
            $"The object for {disk.Target} of '{disk.DomainName}' does not come from New-KvmDiskSnapshot in this session, so it carries no backup run.",
            "Pipe New-KvmDiskSnapshot's output to Copy-VmDisk (in the same pipeline or from a variable in the same session).", disk.DomainName);
        var set = run.BackupSet ?? CreateSet(run, destination, force);
        var manifestDisk = BackupSet.Load(set).Disks.First(d => d.Target == disk.Target);
        var file = Path.Combine(set, manifestDisk.File);
        var partial = file + ".partial";
        try
        {
            File.Delete(partial); // our own leftover from an interrupted copy of this very set
            var copy = await SparseFile.CopyAsync(disk.Source, partial, bandwidthMiBps * (1L << 20), progress, ct).ConfigureAwait(false);
            var check = await SparseFile.DigestAsync(partial, null, ct).ConfigureAwait(false);
            if (check.ContentDigest != copy.ContentDigest)
            {
                throw new BackupException(ErrorIds.CopyVerificationFailed, BackupErrorCategory.InvalidData,
                    $"The copy of {disk.Target} of '{disk.DomainName}' reads back differently from '{disk.Source}' (content digest {check.ContentDigest} instead of {copy.ContentDigest}).",
                    "Check the destination's storage (dmesg, file system errors), then back up again.", disk.DomainName);
            }
            if (disk.Consistency == BackupConsistency.Cold)
                await RequireStillShutOffAsync(disk, ct).ConfigureAwait(false);
            File.Move(partial, file, overwrite: force);

            var manifest = BackupSet.Load(set);
            var entry = manifest.Disks.First(d => d.Target == disk.Target);
            entry.SizeBytes = copy.SizeBytes;
            entry.DataBytes = copy.DataBytes;
            entry.ContentDigest = copy.ContentDigest;
            entry.Verified = true;
            if (run.MarkCopied(disk.Target))
            {
                manifest.Status = BackupSetStatus.Complete;
                manifest.CompletedUtc = DateTime.UtcNow;
            }
            BackupSet.Save(set, manifest);
            disk.BackupSet = set;
            disk.BackupFile = file;
            disk.ContentDigest = copy.ContentDigest;
            disk.CopiedBytes = copy.DataBytes;
            disk.Stage = BackupStage.Copied;
        }
        catch (Exception ex)
        {
            TryDelete(partial);
            var reason = ex is OperationCanceledException ? "the copy was stopped" : $"copying {disk.Target} failed: {ex.Message}";
            BackupSet.MarkIncomplete(set, reason);
            if (ex is IOException io && IsNoSpace(io))
            {
                throw new BackupException(ErrorIds.DestinationFull, BackupErrorCategory.WriteError,
                    $"The destination '{destination}' ran out of space while copying {disk.Target} of '{disk.DomainName}'. The backup set '{set}' is marked Incomplete.",
                    "Free space there or choose another -Destination, then back up again.", disk.DomainName, ex);
            }
            if (ex is IOException or UnauthorizedAccessException)
            {
                throw new BackupException(ErrorIds.CopyFailed, BackupErrorCategory.WriteError,
                    $"Copying {disk.Target} of '{disk.DomainName}' from '{disk.Source}' failed: {ex.Message} The backup set '{set}' is marked Incomplete.",
                    "Fix the cause named above, then back up again.", disk.DomainName, ex);
            }
            throw;
        }
    }

    private static string CreateSet(BackupRun run, string destination, bool force)
    {
        var set = Path.Combine(destination, run.DomainName, run.RunId);
        if (Directory.Exists(set))
        {
            if (!force)
                throw SnapshotService.BackupSetExists(run.DomainName, set);
            Directory.Delete(set, recursive: true);
        }
        Directory.CreateDirectory(set);
        var names = run.Journal.Disks.Select(d => Path.GetFileName(d.Source)).ToList();
        var duplicated = names.GroupBy(n => n, StringComparer.Ordinal).Where(g => g.Count() > 1).Select(g => g.Key).ToHashSet(StringComparer.Ordinal);
        var manifest = new BackupManifest
        {
            DomainName = run.DomainName,
            RunId = run.RunId,
            Consistency = run.Consistency,
            SnapshotName = run.Journal.SnapshotName,
            StartedUtc = run.Journal.StartedUtc,
            Disks = run.Journal.Disks.Select(d => new ManifestDisk
            {
                Target = d.Target,
                Source = d.Source,
                Format = d.Format,
                // Two disks may share a file name in different folders: then the target tells them apart.
                File = duplicated.Contains(Path.GetFileName(d.Source)) ? d.Target + "-" + Path.GetFileName(d.Source) : Path.GetFileName(d.Source),
            }).ToList(),
        };
        File.WriteAllText(Path.Combine(set, BackupSet.DomainXmlFileName), run.InactiveXml);
        BackupSet.Save(set, manifest);
        run.BackupSet = set;
        if (run.Consistency != BackupConsistency.Cold)
        {
            run.Journal.BackupSet = set;
            run.SetPhase(run.Journal.Phase);
        }
        return set;
    }

    private async Task RequireStillShutOffAsync(VmDiskBackup disk, CancellationToken ct)
    {
        var state = await _virsh.GetStateAsync(disk.DomainName, ct).ConfigureAwait(false);
        if (state is not ("shut off" or "crashed"))
        {
            throw new BackupException(ErrorIds.DomainStartedDuringColdCopy, BackupErrorCategory.InvalidOperation,
                $"'{disk.DomainName}' was started while its disks were being copied cold; the copy of {disk.Target} may be inconsistent.",
                $"Back it up again while it runs (a hot backup) or while it stays shut off.", disk.DomainName);
        }
    }

    private static bool IsNoSpace(IOException ex) =>
        (ex.HResult & 0xFFFF) == 28 || ex.Message.Contains("No space left", StringComparison.OrdinalIgnoreCase);

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
        }
    }
}
