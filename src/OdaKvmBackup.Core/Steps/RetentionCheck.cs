namespace OdaKvmBackup.Core.Steps;

/// <summary>Move-OverlayToRetention's part of the preflight.</summary>
internal sealed class RetentionCheck(string retentionPath) : IPreflightCheck
{
    public async Task CheckAsync(PreflightContext context, CancellationToken ct)
    {
        if (context.DiskFolders.FirstOrDefault(f => FileSystemPaths.Normalize(f) == FileSystemPaths.Normalize(retentionPath)) is { } same)
        {
            context.Problem(ErrorIds.RetentionIsDiskFolder, BackupErrorCategory.InvalidArgument,
                $"The retention folder '{retentionPath}' is the folder of a disk of '{context.DomainName}' ({same}); overlays kept there would block the next backup.",
                "Choose another -Path for Move-OverlayToRetention.");
        }
        // The overlays go into <retention>/<domain>/<run id>: folders that exist must be root's own.
        await using var folder = new Stores.LocalBackupStore(retentionPath);
        await OwnFolders.CheckAsync(folder, [context.DomainName, BackupNames.RetentionFolder(context.DomainName, context.RunId)], context, ct).ConfigureAwait(false);
    }
}
