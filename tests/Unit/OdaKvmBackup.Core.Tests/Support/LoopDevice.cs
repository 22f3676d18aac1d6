using System.Diagnostics;

namespace OdaKvmBackup.Core.Tests.Support;

/// <summary>
/// A read-only loop block device over a test's own image file (`losetup --find --show --read-only`), detached
/// on Dispose by its exact name. Needs root, as the whole suite does on the project's machines and in CI.
/// </summary>
internal sealed class LoopDevice : IDisposable
{
    private LoopDevice(string path) => Path = path;

    public string Path { get; }

    public static LoopDevice Attach(string imageFile)
    {
        var (code, output, error) = Run("losetup", "--find", "--show", "--read-only", imageFile);
        if (code != 0 || !output.StartsWith("/dev/loop", StringComparison.Ordinal))
            Assert.Fail($"This test needs a block device: 'losetup --find --show --read-only {imageFile}' failed ({code}): {error.Trim()} (run the suite as root).");
        return new LoopDevice(output.Trim());
    }

    public void Dispose() => Run("losetup", "--detach", Path);

    private static (int Code, string Output, string Error) Run(string program, params string[] args)
    {
        var start = new ProcessStartInfo(program, args) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        try
        {
            using var process = Process.Start(start)!;
            var output = process.StandardOutput.ReadToEnd();
            var error = process.StandardError.ReadToEnd();
            process.WaitForExit();
            return (process.ExitCode, output, error);
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            return (-1, "", ex.Message);
        }
    }
}
