using System.Runtime.InteropServices;

namespace OdaKvmBackup.Core.WayBack;

/// <summary>Files: the disks into a folder. NewDomain: the same, and a domain defined on them. InPlace: the disks
/// back on the VM's own paths (shut off, -Force), the replaced files kept aside.</summary>
public enum RestoreMode { Files, NewDomain, InPlace }

/// <summary>What the user asked Restore-KvmBackup for.</summary>
internal sealed record RestoreRequest(string? Destination, string? NewName, bool Start, bool FullyAllocated, bool Force, bool InPlace);

/// <summary>
/// Restore-KvmBackup: copies a set's disks out of its store (sparse, read back and compared with the manifest),
/// and either leaves them in a folder, defines a new domain on them, or puts them back on a shut-off VM's own paths.
/// Nothing it defines ever points at a disk another domain uses: every disk source of a new definition is checked
/// against the disks (and backing chains) of every domain on the host and the manifest's source paths, a new
/// definition is rebuilt by <see cref="DomainXmlRewriter"/> (never the set's own), and each restored file is
/// inspected (<see cref="CopyInspection"/>) before it takes its name.
/// </summary>
internal sealed partial class RestoreService(HostTools tools, IProcessRunner runner, IOperationSink sink)
{
    public async Task<RestorePlan> PlanAsync(BackupSetInfo set, IBackupStore store, RestoreRequest request, CancellationToken ct)
    {
        if (set.Manifest.Status != BackupSetStatus.Complete)
            throw new BackupException(ErrorIds.BackupSetNotComplete, BackupErrorCategory.InvalidData,
                $"The set {VerifyService.Describe(set)} is {set.Status}{(set.Reason is null ? "" : $" ({set.Reason})")}: it cannot be restored from.",
                $"Choose a Complete set: Get-KvmBackup -Path {set.Destination} -DomainName {set.DomainName} -Status Complete.", set.Location);
        await CheckCopiesAsync(set, store, ct).ConfigureAwait(false);
        var production = await ProductionFilesAsync(set, ct).ConfigureAwait(false);
        var plan = request.InPlace
            ? await PlanInPlaceAsync(set, request, ct).ConfigureAwait(false)
            : await PlanCopyAsync(set, store, request, production, ct).ConfigureAwait(false);
        CheckFreeSpace(plan);
        return plan;
    }

    /// <summary>Each copy must be in the store with the size its manifest says: a copy that is larger (or smaller)
    /// is not the one the set was made with, and is refused before anything is written.</summary>
    private static async Task CheckCopiesAsync(BackupSetInfo set, IBackupStore store, CancellationToken ct)
    {
        foreach (var disk in set.Manifest.Disks)
        {
            var relative = set.FileInSet(disk.File);
            var entry = await store.GetEntryAsync(relative, ct).ConfigureAwait(false);
            if (entry is null || entry.IsFolder)
                throw new BackupException(ErrorIds.BackupCopyMissing, BackupErrorCategory.ObjectNotFound,
                    $"The copy of {disk.Target} in the set {VerifyService.Describe(set)} ({store.Describe(relative)}) is missing. Nothing was written.",
                    $"Restore from another Complete set (Get-KvmBackup -Path {set.Destination} -DomainName {set.DomainName} -Status Complete).", set.Location);
            if (entry.Size != disk.SizeBytes)
                throw new BackupException(ErrorIds.BackupCopyDamaged, BackupErrorCategory.InvalidData,
                    $"The copy of {disk.Target} in the set {VerifyService.Describe(set)} ({store.Describe(relative)}) is {entry.Size} bytes, backup.json says {disk.SizeBytes}: it is not the copy the set was made with. Nothing was written.",
                    $"Do not restore from this set: restore from another Complete set (Get-KvmBackup -Path {set.Destination} -DomainName {set.DomainName} -Status Complete), and find out who changed the backup store.", set.Location);
        }
    }

    /// <summary>The bytes the restore writes into each folder (the data of each copy, or its whole size for a raw
    /// disk written fully allocated) must be free there: the files it replaces are kept, so none is freed.</summary>
    private static void CheckFreeSpace(RestorePlan plan)
    {
        foreach (var folder in plan.Files.GroupBy(f => Path.GetDirectoryName(f.TargetPath)!, StringComparer.Ordinal))
        {
            var disks = folder.Select(f => plan.Set.Manifest.Disks.First(d => d.Target == f.Target)).ToList();
            var needed = disks.Sum(d => plan.Request.FullyAllocated && d.Format == "raw" ? d.SizeBytes ?? 0 : Math.Min(d.DataBytes ?? d.SizeBytes ?? 0, d.SizeBytes ?? 0));
            var free = FileSystemPaths.FreeBytes(folder.Key);
            if (needed > free)
                throw new BackupException(ErrorIds.NotEnoughSpaceAtDestination, BackupErrorCategory.ResourceUnavailable,
                    $"Restoring {string.Join(", ", disks.Select(d => d.Target))} of the set {VerifyService.Describe(plan.Set)} into '{folder.Key}' needs {needed} bytes ({FileSystemPaths.FormatBytes(needed)}), but {free} bytes ({FileSystemPaths.FormatBytes(free)}) are free there. Nothing was written.",
                    plan.Mode == RestoreMode.InPlace
                        ? "Free space beside the VM's disks (the replaced files are kept aside until you remove them), or restore into another folder with -Destination."
                        : "Free space there, or choose another -Destination.", folder.Key);
        }
    }

    private async Task<RestorePlan> PlanInPlaceAsync(BackupSetInfo set, RestoreRequest request, CancellationToken ct)
    {
        var domain = set.DomainName;
        if (!request.Force)
            throw new BackupException(ErrorIds.InPlaceNeedsForce, BackupErrorCategory.InvalidOperation,
                $"An in-place restore replaces the disks of '{domain}'; it is done only with -Force.",
                $"Shut '{domain}' off, then add -Force (the files it replaces are kept beside them). Or restore into a folder with -Destination.", domain);
        await RequireShutOffAsync(domain, ct).ConfigureAwait(false);
        if (RunJournal.TryLoad(domain) is not null)
            throw RunErrors.BackupInProgress(domain);
        var current = DomainXml.Parse(await tools.Virsh.DumpXmlAsync(domain, inactive: true, ct).ConfigureAwait(false)).Disks;
        var now = DateTime.UtcNow;
        var files = new List<RestoreFilePlan>();
        foreach (var disk in set.Manifest.Disks)
        {
            var now_ = current.FirstOrDefault(d => d.Target == disk.Target);
            if (now_ is null || now_.Source is null || FileSystemPaths.Normalize(now_.Source) != FileSystemPaths.Normalize(disk.Source)
                || now_.Format != disk.Format || now_.OnOverlay || now_.Type != "file")
            {
                var what = now_ is null ? "has no such disk now" : $"now uses {now_.Source} ({now_.Format}, {now_.Type}{(now_.OnOverlay ? ", on an overlay" : "")})";
                throw new BackupException(ErrorIds.RestoreTargetMismatch, BackupErrorCategory.InvalidOperation,
                    $"{disk.Target} of '{domain}' was {disk.Source} ({disk.Format}) in the set {set.RunId}, but '{domain}' {what}: an in-place restore would not put back what the set holds.",
                    "Restore into a folder (-Destination) and attach the files by hand, or with -NewName.", domain);
            }
            var target = disk.Source;
            files.Add(new RestoreFilePlan(disk.Target, disk.File, disk.Format, target, disk.SizeBytes, File.Exists(target),
                BackupNames.KeptAsidePath(Path.GetDirectoryName(target)!, Path.GetFileName(target), now, $"The set {set.Location}")));
        }
        return new RestorePlan { Set = set, Mode = RestoreMode.InPlace, Request = request, Files = files };
    }

    private async Task<RestorePlan> PlanCopyAsync(BackupSetInfo set, IBackupStore store, RestoreRequest request, IReadOnlySet<string> production, CancellationToken ct)
    {
        var folder = FileSystemPaths.RequireWritableFolder(request.Destination ?? "", "Destination");
        var now = DateTime.UtcNow;
        var files = new List<RestoreFilePlan>();
        foreach (var disk in set.Manifest.Disks)
        {
            var target = BackupNames.RestoredFilePath(folder, disk.File, $"The set {set.Location}");
            RequireNotProduction(target, production, set, disk.Target);
            var exists = File.Exists(target) || Directory.Exists(target);
            if (exists && (!request.Force || Directory.Exists(target)))
                throw new BackupException(ErrorIds.RestoreTargetExists, BackupErrorCategory.ResourceExists,
                    $"'{target}' already exists; the restore of {disk.Target} would replace it.",
                    "Choose an empty -Destination folder, or add -Force to replace the files there (they are kept aside; never a disk a domain uses).", target);
            // Even with -Force nothing is deleted: a file there is kept beside it, for its owner to remove.
            files.Add(new RestoreFilePlan(disk.Target, disk.File, disk.Format, target, disk.SizeBytes, exists,
                exists ? BackupNames.KeptAsidePath(folder, disk.File, now, $"The set {set.Location}") : null));
        }
        if (request.NewName is null)
            return new RestorePlan { Set = set, Mode = RestoreMode.Files, Request = request, Folder = folder, Files = files };

        var name = request.NewName;
        if (string.IsNullOrWhiteSpace(name) || name.Contains('/') || name.Trim() != name || name.Length > 200)
            throw new BackupException(ErrorIds.InvalidDomainName, BackupErrorCategory.InvalidArgument,
                $"'{name}' cannot be a domain name.", "Give a name without '/', leading or trailing blanks.", name);
        if ((await tools.Virsh.ListAllDomainsAsync(ct).ConfigureAwait(false)).Contains(name, StringComparer.Ordinal))
            throw new BackupException(ErrorIds.DomainExists, BackupErrorCategory.ResourceExists,
                $"A domain named '{name}' already exists on this host.", "Choose another -NewName (virsh list --all shows the names in use).", name);
        var definitionFile = BackupNames.RestoredDefinitionPath(folder, name);
        if (File.Exists(definitionFile) && !request.Force)
            throw new BackupException(ErrorIds.RestoreTargetExists, BackupErrorCategory.ResourceExists,
                $"'{definitionFile}' already exists.", "Choose another -Destination or -NewName, or add -Force to replace it.", definitionFile);
        var saved = System.Text.Encoding.UTF8.GetString(await store.ReadSmallFileAsync(set.FileInSet(BackupNames.DomainXmlFileName), ct).ConfigureAwait(false));
        var host = await DomainXmlRewriter.ReadHostFactsAsync(tools.Virsh, saved, set.DomainName, name, ct).ConfigureAwait(false);
        var copy = DomainXmlRewriter.Rewrite(saved, new DomainCopyRequest(name,
            files.ToDictionary(f => f.Target, f => new DomainCopyDisk(f.TargetPath, f.Format), StringComparer.Ordinal), folder, [folder], DropInterfaces: false), host);
        foreach (var source in DomainXmlRewriter.DiskSources(copy.Xml))
            RequireNotProduction(source, production, set, source);
        var plan = new RestorePlan
        {
            Set = set, Mode = RestoreMode.NewDomain, Request = request, Folder = folder, Files = files,
            DefinitionXml = copy.Xml, DefinitionFile = definitionFile,
        };
        plan.Notes.AddRange(copy.Notes);
        plan.LeftOut.AddRange(copy.LeftOut);
        return plan;
    }

    /// <summary>Refuses a restore target that is (or, through links, resolves to) a disk file or backing image a
    /// domain on this host uses, or one of the set's source disks.</summary>
    private static void RequireNotProduction(string path, IReadOnlySet<string> production, BackupSetInfo set, string what)
    {
        if (production.Contains(HostPaths.Real(path)))
            throw new BackupException(ErrorIds.RestoreWouldUseProductionFile, BackupErrorCategory.InvalidArgument,
                $"The restore of {what} would write to or point at '{path}', which a domain on this host uses (or '{set.DomainName}' used when the set was made). Nothing was changed.",
                $"Restore into a folder of its own (-Destination). To put '{set.DomainName}' itself back, shut it off and use -InPlace -Force.", path);
    }

    /// <summary>Every disk file and backing image of every domain on the host (saved and, when running, live
    /// definitions), and the set's source paths: the files a restore must never write to or point at.</summary>
    public async Task<IReadOnlySet<string>> ProductionFilesAsync(BackupSetInfo set, CancellationToken ct)
    {
        var files = new HashSet<string>(StringComparer.Ordinal);
        foreach (var disk in set.Manifest.Disks)
            files.Add(HostPaths.Real(disk.Source));
        foreach (var excluded in set.ExcludedDisks.Where(e => e.Source is not null))
            files.Add(HostPaths.Real(excluded.Source!));
        files.UnionWith(await HostPaths.ChainFilesOfAllDomainsAsync(tools.Virsh, ct).ConfigureAwait(false));
        return files;
    }

    private async Task RequireShutOffAsync(string domain, CancellationToken ct)
    {
        var state = await tools.Virsh.GetStateAsync(domain, ct).ConfigureAwait(false);
        if (state != "shut off")
            throw new BackupException(ErrorIds.DomainNotShutOff, BackupErrorCategory.InvalidOperation,
                $"'{domain}' is {state}: its disks are put back only while it is shut off.",
                $"Shut it off first (virsh shutdown {domain}; on ODA: odacli stop-vm -n {domain}), then restore again; or restore into a folder with -Destination.", domain);
    }

    // ---------------------------------------------------------------- doing it

    public async Task<RestoredBackup> ExecuteAsync(RestorePlan plan, IBackupStore store, CancellationToken ct)
    {
        var set = plan.Set;
        var partials = new List<string>();
        var restored = new List<(RestoreFilePlan File, string Partial, CopyResult Copy)>();
        try
        {
            for (var i = 0; i < plan.Files.Count; i++)
            {
                var file = plan.Files[i];
                var folder = Path.GetDirectoryName(file.TargetPath)!;
                var partialName = BackupNames.RestorePartial(Path.GetFileName(file.TargetPath));
                var partial = BackupNames.RestorePartialPath(folder, Path.GetFileName(file.TargetPath), $"The set {set.Location}");
                partials.Add(partial);
                var copy = await CopyOneAsync(set, store, file, folder, partialName, i, plan.Files.Count, ct).ConfigureAwait(false);
                // The restored file is what QEMU will open (a domain defined on it, the VM's own disk): inspected
                // before it takes its name.
                await CopyInspection.RequireSafeAsync(tools.QemuImg, set, set.Manifest.Disks.First(d => d.Target == file.Target), partial, ct).ConfigureAwait(false);
                if (plan.Request.FullyAllocated && file.Format == "raw")
                    Allocate(partial, copy.SizeBytes);
                restored.Add((file, partial, copy));
            }
            sink.Progress(new ProgressUpdate(ProgressIds.Restore, null, $"Restoring {VerifyService.Describe(set)}", "Done", 100, Completed: true));
            return plan.Mode switch
            {
                RestoreMode.InPlace => await SwapInPlaceAsync(plan, restored, ct).ConfigureAwait(false),
                _ => await PlaceAndDefineAsync(plan, restored, ct).ConfigureAwait(false),
            };
        }
        finally
        {
            foreach (var partial in partials)
            {
                try
                {
                    PrivateFiles.Delete(partial);
                }
                catch (IOException ex)
                {
                    sink.Warning($"'{partial}' could not be removed: {ex.Message}");
                }
            }
        }
    }

    /// <summary>Copies one disk out of the store into a partial file, then reads that file back from storage:
    /// both must give the manifest's content digest. A local set is copied sparse by its data extents; a set on
    /// an SSH server is streamed back and written sparse.</summary>
    private async Task<CopyResult> CopyOneAsync(BackupSetInfo set, IBackupStore store, RestoreFilePlan file, string folder, string partialName,
        int index, int count, CancellationToken ct)
    {
        var disk = set.Manifest.Disks.First(d => d.Target == file.Target);
        var relative = set.FileInSet(disk.File);
        var activity = $"Restoring {VerifyService.Describe(set)}";
        var rate = new RateMeter();
        void Progress(long done, long total) => sink.Progress(new ProgressUpdate(ProgressIds.Restore, null, activity,
            $"{file.Target}: {rate.Describe(done, total)}", (int)((index * 100 + (total == 0 ? 100 : done * 100 / total)) / count)));
        var local = new LocalBackupStore(folder) { ParameterName = "Destination" };
        // A set of format OdaKvmBackup/3 is checked by its digest list (the manifest's Digests); an earlier one by its
        // content digest. Neither needs another set, nor the set's own list file: the manifest's hash is enough.
        var legacy = set.Manifest.Format != CheckedManifest.KnownFormat;
        CopyResult copy;
        await using (var writer = await local.CreateFileAsync(partialName, ct).ConfigureAwait(false))
        {
            if (store.IsRemote)
            {
                await using var reader = await store.OpenReadAsync(relative, ct).ConfigureAwait(false);
                copy = await StreamCopy.CopyAsync(reader, writer, Progress, ct, legacyContentDigest: legacy).ConfigureAwait(false);
            }
            else
            {
                copy = await SparseCopy.CopyAsync(store.Describe(relative), writer, null, 0, p => Progress(p.Compared, p.Total), ct, legacyContentDigest: legacy).ConfigureAwait(false);
            }
        }
        var partial = BackupNames.RestorePartialPath(folder, Path.GetFileName(file.TargetPath), $"The set {set.Location}");
        string expected;
        if (legacy)
        {
            expected = disk.ContentDigest!;
            if (copy.ContentDigest != expected)
                throw VerificationFailed(set, file, store.Describe(relative), $"the copy in the set reads as {copy.ContentDigest}, backup.json says {expected}");
            var readBack = await SparseCopy.DigestAsync(partial, null, ct).ConfigureAwait(false);
            if (readBack.ContentDigest != expected)
                throw VerificationFailed(set, file, partial, $"the restored file reads back from storage as {readBack.ContentDigest}, backup.json says {expected}");
        }
        else
        {
            expected = disk.Digests!;
            if (copy.Digests.Sha256 != expected)
                throw VerificationFailed(set, file, store.Describe(relative), $"the copy in the set reads as the digest list {copy.Digests.Sha256}, backup.json records {expected}");
            var readBack = await SparseCopy.DigestListAsync(partial, null, ct).ConfigureAwait(false);
            if (readBack.Sha256 != expected)
                throw VerificationFailed(set, file, partial, $"the restored file reads back from storage as the digest list {readBack.Sha256}, backup.json records {expected}");
        }
        sink.Verbose($"Restored {file.Target} of {VerifyService.Describe(set)} into {partial}: {FileSystemPaths.FormatBytes(copy.DataBytes)} of data, read back equal to backup.json ({(legacy ? "content digest" : "digest list")} {expected}).");
        return copy;
    }

    private static BackupException VerificationFailed(BackupSetInfo set, RestoreFilePlan file, string where, string what) =>
        new(ErrorIds.RestoreVerificationFailed, BackupErrorCategory.InvalidData,
            $"The restore of {file.Target} from the set {VerifyService.Describe(set)} failed its check ({where}): {what}. Nothing was replaced or defined.",
            $"Run Test-KvmBackup on the set; restore from another Complete set if it is damaged; check the storage of the restore folder.", set.Location);

    private async Task<RestoredBackup> PlaceAndDefineAsync(RestorePlan plan, List<(RestoreFilePlan File, string Partial, CopyResult Copy)> restored, CancellationToken ct)
    {
        var keptAside = await SwapInAsync(restored, keepOwner: false, ct).ConfigureAwait(false);
        var started = false;
        if (plan.Mode == RestoreMode.NewDomain)
        {
            PrivateFiles.WriteAtomically(plan.DefinitionFile!, System.Text.Encoding.UTF8.GetBytes(plan.DefinitionXml!));
            var name = plan.Request.NewName!;
            // The host may have changed since the plan: check again, right before the definition is made.
            var production = await ProductionFilesAsync(plan.Set, ct).ConfigureAwait(false);
            foreach (var source in DomainXmlRewriter.DiskSources(plan.DefinitionXml!))
                RequireNotProduction(source, production, plan.Set, source);
            await tools.Virsh.DefineAsync(plan.DefinitionFile!, name, ct).ConfigureAwait(false);
            if (plan.Request.Start)
            {
                await tools.Virsh.StartAsync(name, ct).ConfigureAwait(false);
                started = true;
            }
        }
        return Result(plan, restored, plan.Mode == RestoreMode.NewDomain ? plan.Request.NewName : null, started, keptAside);
    }

    /// <summary>Swaps the verified files in: each file there now is renamed aside, the restored one takes its
    /// name (with the old file's owner and mode). The domain's lock is held and its state checked again first; if
    /// a rename fails, what was swapped is swapped back.</summary>
    private async Task<RestoredBackup> SwapInPlaceAsync(RestorePlan plan, List<(RestoreFilePlan File, string Partial, CopyResult Copy)> restored, CancellationToken ct)
    {
        var domain = plan.Set.DomainName;
        using var domainLock = DomainLock.TryAcquire(domain) ?? throw RunErrors.BackupInProgress(domain);
        await RequireShutOffAsync(domain, ct).ConfigureAwait(false);
        var keptAside = await SwapInAsync(restored, keepOwner: true, ct).ConfigureAwait(false);
        return Result(plan, restored, domain, false, keptAside);
    }

    /// <summary>Puts each verified file in place: a file there now is renamed aside first (never deleted), and with
    /// <paramref name="keepOwner"/> the restored one takes its owner and mode. If a rename fails, the files kept
    /// aside go back to their names.</summary>
    private async Task<List<string>> SwapInAsync(List<(RestoreFilePlan File, string Partial, CopyResult Copy)> restored, bool keepOwner, CancellationToken ct)
    {
        var movedAside = new List<RestoreFilePlan>();
        var current = 0;
        try
        {
            for (; current < restored.Count; current++)
            {
                var (file, partial, _) = restored[current];
                if (file.KeptAside is not null && File.Exists(file.TargetPath))
                {
                    if (keepOwner)
                    {
                        File.SetUnixFileMode(partial, File.GetUnixFileMode(file.TargetPath));
                        var chown = await runner.RunAsync("chown", ["--reference=" + file.TargetPath, "--", partial], null, ct, null).ConfigureAwait(false);
                        if (chown.ExitCode != 0)
                            sink.Warning($"The owner of '{file.TargetPath}' could not be given to the restored file: {chown.StandardError.Trim()}");
                    }
                    File.Move(file.TargetPath, file.KeptAside, overwrite: false);
                    movedAside.Add(file);
                }
                File.Move(partial, file.TargetPath, overwrite: false);
                PrivateFiles.FsyncDirectory(Path.GetDirectoryName(file.TargetPath)!);
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            foreach (var file in Enumerable.Reverse(movedAside))
                File.Move(file.KeptAside!, file.TargetPath, overwrite: true);
            throw StoreErrors.FromIOException(ex, restored[current].File.TargetPath);
        }
        return movedAside.Select(f => f.KeptAside!).ToList();
    }

    private static RestoredBackup Result(RestorePlan plan, List<(RestoreFilePlan File, string Partial, CopyResult Copy)> restored, string? domain, bool started, IReadOnlyList<string> keptAside) => new()
    {
        DomainName = domain,
        SourceDomain = plan.Set.DomainName,
        RunId = plan.Set.RunId,
        Mode = plan.Mode,
        Folder = plan.Folder,
        DefinitionFile = plan.DefinitionFile,
        Started = started,
        KeptAside = keptAside,
        Notes = plan.Notes,
        Disks = restored.Select(r => new RestoredDisk(r.File.Target, r.File.TargetPath, r.File.Format, r.Copy.SizeBytes,
            HostPaths.AllocatedBytes(r.File.TargetPath), r.Copy.ContentDigest, true)
        {
            // Sets of format OdaKvmBackup/3 are checked by the digest list, earlier ones by the content digest.
            Digests = r.Copy.ContentDigest is null ? r.Copy.Digests.Sha256 : null,
        }).ToList(),
    };

    /// <summary>Allocates every byte of a file (ODA keeps its vdisks fully allocated); the content stays as it is.</summary>
    private static void Allocate(string path, long size)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.None);
        var error = PosixFallocate((int)stream.SafeFileHandle.DangerousGetHandle(), 0, size);
        if (error != 0)
            throw StoreErrors.FromIOException(new IOException($"posix_fallocate failed (errno {error})", error), path);
        stream.Flush(flushToDisk: true);
    }

    [LibraryImport("libc", EntryPoint = "posix_fallocate")]
    private static partial int PosixFallocate(int fd, long offset, long length);
}
