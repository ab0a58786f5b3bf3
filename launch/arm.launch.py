"""Launch the diffusion controller for a real Franka Panda under ros2_control.

    ros2 launch diffusion_controller arm.launch.py model:=/path/to/model_dir

The arm's ros2_control stack (franka_ros2 with a `forward_position_controller`, or a
`joint_trajectory_controller` with command_interface:=trajectory) and the camera driver are
started separately. The controller is a lifecycle node; with `autostart` (default true in
config/arm.yaml) it configures and activates itself, otherwise drive it with
`ros2 lifecycle set /<namespace>/diffusion_controller configure|activate`.
"""

from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from diffusion_controller.settings.controller import SPECS
from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("diffusion_controller")
    args = [
        DeclareLaunchArgument(
            "model",
            description="Model artifact directory (required: a real arm never falls back to the "
            "sim-trained model shipped in models/).",
        ),
        DeclareLaunchArgument(
            "backend",
            default_value=SPECS["backend"].default,
            choices=list(SPECS["backend"].choices),
            description="Inference backend.",
        ),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([share, "config", "arm.yaml"]),
            description="Controller parameter file.",
        ),
        DeclareLaunchArgument("namespace", default_value="", description="Node namespace."),
        DeclareLaunchArgument(
            "command_interface",
            default_value=SPECS["command_interface"].default,
            choices=list(SPECS["command_interface"].choices),
            description="position: forward_position_controller; trajectory: JointTrajectory.",
        ),
    ]
    controller = LifecycleNode(
        package="diffusion_controller",
        executable="controller",
        name="diffusion_controller",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "model_path": ParameterValue(LaunchConfiguration("model"), value_type=str),
                "backend": ParameterValue(LaunchConfiguration("backend"), value_type=str),
                "command_interface": ParameterValue(
                    LaunchConfiguration("command_interface"), value_type=str
                ),
            },
        ],
    )
    return LaunchDescription([*args, controller])
